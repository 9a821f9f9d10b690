"""
The reporter: samples the inputs into its outbox and sends them over a
connection kept open with reconnects, in protocol v2 when the collector
speaks it (every reading numbered, kept until acknowledged, replayed after
a cut), else as the tutorial's plain text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from rpisensor.app.stopping import StopInOrder
from rpisensor.net.nodelay import send_at_once
from rpisensor.net.peers import peer_text
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT, reconnecting_client
from rpisensor.net.wording import NamedLogger
from rpisensor.roles.report.connection import ReportFactory, ReportProtocol
from rpisensor.roles.report.options import DEFAULT_WINDOW
from rpisensor.roles.report.outbox import OutboxService
from rpisensor.sensing.reader import InputReader
from rpisensor.sensing.sample import Sample
from rpisensor.stream.follower import ChangeFollower
from rpisensor.stream.handshake import Handshake, NotV2
from rpisensor.stream.heartbeat import interval_for
from rpisensor.stream.identity import ClockState
from rpisensor.entries import Entry
from rpisensor.stream.journal import Journal
from rpisensor.stream.measuring import MeasurementSampler
from rpisensor.stream.outbox import JournalService
from rpisensor.stream.sampler import Sampler
from rpisensor.stream.sender import ReceiverAhead
from rpisensor.stream.state import InputState
from rpisensor.stream.uplink import Uplink
from rpisensor.wire import v2

#: What the log says once when a server turns out not to speak v2.
NOT_V2 = (
    "the server does not speak rpisensor v2 (the tutorial's DataServer3?): sending plain text; "
    "readings are not acknowledged"
)


@dataclass(frozen=True)
class StreamSettings:
    """
    How the reporter speaks v2.

    @ivar device: this Pi's id in its hello.
    @ivar protocol: C{"auto"} (offer v2, else plain text), C{"2"} (v2 only),
        C{"1"} (plain text only, no hello).
    @ivar hello_timeout: seconds to wait for the welcome.
    @ivar heartbeat: seconds between heartbeats, announced in the hello;
        C{None}: none (and no watch for a silent collector).
    @ivar window: the most readings sent and not yet acknowledged.
    """

    device: str
    protocol: str = "auto"
    hello_timeout: float = 3.0
    heartbeat: float | None = interval_for(DEFAULT_DEAD_PEER_TIMEOUT)
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.protocol not in ("auto", "1", "2"):
            raise ValueError(f"protocol must be 'auto', '1' or '2', got {self.protocol!r}")


class Reporter:
    """
    Samples every input each C{interval} seconds (a L{Sampler}), and every
    measurement sensor at its own C{interval=} (a L{MeasurementSampler}),
    into the C{outbox}, and sends over the connection, when there is one.

    In v2 (the collector answered the C{hello} with C{welcome}) the outbox
    is streamed from what the collector has: readings taken while the link
    was down come too, each once, in order, and the outbox lets a reading go
    only once the collector acknowledged it.

    In plain text (v1: the server does not speak v2, or C{protocol="1"}, or
    no outbox at all) it behaves as the tutorial's DataClient3: the text of
    every reading (with C{on_change}, of every change, plus every input's
    text each C{heartbeat} seconds) goes as it is taken; on (re)connect the
    current state goes at once; readings taken while disconnected are not
    sent. What such a server was handed is let go from the outbox, as it
    cannot acknowledge anything, so the outbox does not fill up.

    While the server has paused the connection (it cannot keep up, e.g. a
    slow disk), sampling goes on and nothing is sent. In v2 the readings
    wait in the outbox; in plain text the inputs that had something to send
    are remembered, and on resume each one's latest text goes, once.

    @param on_reading: called with each reading (a L{v2.Reading}, with its
        seq) once it is committed to the outbox.
    @param on_ack: called with the seq through which the collector has
        stored everything, each time that grows.
    """

    _log = NamedLogger("rpisensor.report")

    def __init__(
        self,
        reader: InputReader,
        clock,
        interval: float = 2.0,
        on_change: bool = False,
        heartbeat: float = 60.0,
        outbox: JournalService | None = None,
        stream: StreamSettings | None = None,
        clock_state: ClockState | None = None,
        on_reading: Callable[[v2.Reading], object] | None = None,
        on_ack: Callable[[int], object] | None = None,
        state: InputState | None = None,
    ) -> None:
        if outbox is not None and stream is None:
            raise ValueError("an outbox needs StreamSettings (at least the device)")
        self.reader = reader
        self.clock = clock
        self.interval = interval
        self.on_change = on_change
        self.heartbeat = heartbeat
        self.outbox = outbox
        self.stream = stream
        self.latest: dict[str, str] = {}
        #: When the collector last acknowledged, as C{(seq, clock time)}.
        self.last_ack: tuple[int, float] | None = None
        self._protocol: ReportProtocol | None = None
        self._unsent: set[str] = set()
        self._reading_listeners = [on_reading] if on_reading is not None else []
        self._ack_listeners = [on_ack] if on_ack is not None else []
        self._waiting_for_ack: list[tuple[int, Deferred]] = []
        self._mode_told: str | None = None
        clock_state = clock_state if clock_state is not None else ClockState()
        # With --on-change, inputs whose driver reports each change (kernel edge
        # events) are recorded as the changes come, timed by the driver, with
        # no reads; the sampler reads the others every interval.
        followed = state.tracked if state is not None and on_change and outbox is not None else set()
        self.follower = (
            ChangeFollower(state, outbox, clock_state, on_reading=self._sampled) if followed else None
        )
        self.sampler = Sampler(
            reader, outbox, clock, interval, on_change, clock_state, on_sample=self._sampled,
            names=[name for name in reader.inputs if name not in followed],
        )  # fmt: skip
        #: The measurement sensors, each on its own interval= and change= (not --interval).
        self.measuring = MeasurementSampler(reader, outbox, clock, clock_state, on_publish=self._sampled)
        self._heartbeat = LoopingCall(self.send_all)
        self._heartbeat.clock = clock
        if outbox is not None:
            outbox.add_listener(self._committed)

    # -- life -------------------------------------------------------------------

    def start(self) -> None:
        if self.sampler.names:
            self.sampler.start()
        if self.follower is not None:
            self.follower.start()
        self.measuring.start()
        if self.on_change:
            self._heartbeat.start(self.heartbeat, now=False).addErrback(self._heartbeat_failed)

    def _heartbeat_failed(self, failure) -> None:
        self._log.failure(
            "The --heartbeat messages stopped (a bug: please report it); changes are still sent",
            failure,
        )

    def stop(self) -> None:
        self.sampler.stop()
        if self.follower is not None:
            self.follower.stop()
        self.measuring.stop()
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self._protocol is not None:
            self._protocol.stop_being_producer()

    def sample(self) -> Deferred:
        """Read every input once (a sample in progress is shared, not doubled)."""
        return self.sampler.sample()

    # -- what the embedding program hears ----------------------------------------------

    def add_listeners(
        self,
        on_reading: Callable[[v2.Reading], object] | None = None,
        on_ack: Callable[[int], object] | None = None,
    ) -> None:
        """Also call C{on_reading} per reading committed, C{on_ack} per acknowledgement."""
        if on_reading is not None:
            self._reading_listeners.append(on_reading)
        if on_ack is not None:
            self._ack_listeners.append(on_ack)

    def when_acknowledged(self, seq: int) -> Deferred:
        """Fires with the ack's seq once the collector has stored everything up to C{seq}."""
        if self.last_ack is not None and self.last_ack[0] >= seq:
            return succeed(self.last_ack[0])
        d: Deferred = Deferred()
        self._waiting_for_ack.append((seq, d))
        return d

    def _committed(self, entries: list[Entry]) -> None:
        for entry in entries:
            if isinstance(entry, v2.Reading):
                for listener in list(self._reading_listeners):
                    _call(listener, entry, self._log)
        protocol = self._protocol
        if protocol is not None and protocol.mode == "1" and not protocol.paused and entries:
            self.outbox.acknowledge(entries[-1].last)  # handed to a server that cannot ack

    def _acknowledged(self, seq: int) -> None:
        self.last_ack = (seq, self.clock.seconds())
        waiting, self._waiting_for_ack = self._waiting_for_ack, []
        for wanted, d in waiting:
            if wanted <= seq:
                d.callback(seq)
            else:
                self._waiting_for_ack.append((wanted, d))
        for listener in list(self._ack_listeners):
            _call(listener, seq, self._log)

    # -- a connection comes and goes ----------------------------------------------------

    @property
    def connection(self) -> ReportProtocol | None:
        """The connection in use, if any."""
        return self._protocol

    def attach(self, protocol: ReportProtocol) -> None:
        """A connection is up: offer v2, or send the current state in plain text."""
        self._protocol = protocol
        self._unsent.clear()
        if self.outbox is None or self.stream.protocol == "1":
            self._speak_plain(protocol)
            return
        journal = self.outbox.journal
        protocol.mode = "hello"
        hello = v2.Hello("report", self.stream.device, journal.stream, self.stream.heartbeat, journal.last)
        protocol.handshake = Handshake(self.clock, hello, protocol.sendMessage, self.stream.hello_timeout)
        protocol.handshake.result.addCallbacks(
            self._welcomed, self._not_welcomed, (protocol,), None, (protocol,)
        )

    def _welcomed(self, welcome: v2.Welcome, protocol: ReportProtocol) -> None:
        if protocol is not self._protocol or protocol.mode != "hello":
            return
        where = peer_text(protocol.transport)
        if welcome.acked is None:
            protocol.give_up(
                "{where} answered our hello with a welcome that has no 'acked': it is not a "
                "collector (a 'serve'?). Check --connect; trying again later.",
                where=where,
            )
            return
        try:
            uplink = Uplink(
                self.outbox, protocol.sendMessage, welcome, self.clock, self.stream.heartbeat,
                self.stream.window, protocol.peer_dead, self._acknowledged, paused=protocol.paused,
            )  # fmt: skip
        except ReceiverAhead as e:
            protocol.give_up("{where}: {error}", where=where, error=str(e))
            return
        protocol.mode = "2"
        protocol.uplink = uplink
        send_at_once(protocol.transport)  # each reading goes out at once, not after the collector's delayed ACK
        self._mode_told = "2"
        journal = self.outbox.journal
        protocol.peer_log.info(
            "Streaming to {where} (rpisensor v2): it has stream {stream} up to seq {acked}; "
            "{count} readings to send from the outbox.",
            where=where, stream=journal.stream, acked=uplink.acked,
            count=max(0, journal.last - uplink.acked),
        )  # fmt: skip

    def _not_welcomed(self, failure: Failure, protocol: ReportProtocol) -> None:
        if protocol is not self._protocol or protocol.mode != "hello":
            return
        where = peer_text(protocol.transport)
        if failure.check(v2.FrameError):
            protocol.give_up(
                "{where} answered our hello with a welcome this reporter cannot read ({error}); "
                "trying again later.",
                where=where, error=failure.getErrorMessage(),
            )  # fmt: skip
            return
        failure.trap(NotV2)
        if self.stream.protocol == "2":
            protocol.give_up(
                "{where} does not speak rpisensor v2: {why}. With --protocol 2 no plain text is "
                "sent; trying again later.",
                where=where, why=failure.getErrorMessage(),
            )  # fmt: skip
            return
        if self._mode_told != "1":
            self._mode_told = "1"
            protocol.peer_log.warn(
                "{where}: {why}, so {what}.", where=where, why=failure.getErrorMessage(), what=NOT_V2
            )
        self._speak_plain(protocol)

    def detach(self, protocol: ReportProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self._unsent.clear()

    # -- plain text (v1) --------------------------------------------------------------------

    def _speak_plain(self, protocol: ReportProtocol) -> None:
        """Send as DataClient3 does from now on: the current state at once (or after the first sample)."""
        protocol.mode = "1"
        self._let_go()
        if self.latest:
            self.send_all()
        else:
            self.sample()

    def _let_go(self) -> None:
        if self.outbox is not None:
            self.outbox.acknowledge(self.outbox.journal.last)

    def _sampled(self, reading: Sample) -> None:
        name, text = reading.name, reading.text
        changed = self.latest.get(name) != text
        self.latest[name] = text
        if changed or not self.on_change:
            self._send(name)

    def send_all(self) -> None:
        """Send the latest text of every input (heartbeat, and on connect)."""
        for name in list(self.latest):
            self._send(name)

    def _send(self, name: str) -> None:
        protocol = self._protocol
        if protocol is None or protocol.mode != "1":
            return
        if protocol.transport.disconnecting:
            protocol.stop_being_producer()  # closed by someone else: let a TLS close finish
            return
        if protocol.paused:
            self._unsent.add(name)
            return
        text = self.latest[name]
        protocol.sendMessage(text)
        self._log.debug("Sent {text}", text=text)

    def resumed(self, protocol: ReportProtocol) -> None:
        """The server takes data again: in plain text, send the latest text of what waited, in input order."""
        if protocol is not self._protocol or protocol.mode != "1":
            return
        self._let_go()
        for name in [name for name in self.latest if name in self._unsent]:
            if protocol.paused:  # paused again by the sends just made: the rest keeps waiting
                return
            self._unsent.discard(name)
            self._send(name)


def _call(listener, value, log) -> None:
    try:
        listener(value)
    except Exception:
        log.failure("A reporter listener ({listener!r}) failed", listener=listener)


class ReporterService(Service):
    """Samples with a L{Reporter} while the service runs."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def startService(self) -> None:
        super().startService()
        self.reporter.start()

    def stopService(self) -> None:
        super().stopService()
        self.reporter.stop()


class ReportService(StopInOrder):
    """
    The whole reporter; stops the sampling, then the connection, then the
    status listener, the outbox (its last commits synced) and the reads.

    @ivar reporter: the L{Reporter}.
    @ivar client: the service keeping the connection open.
    @ivar outbox: the L{OutboxService}.
    """

    def __init__(self, reporter: Reporter, client, outbox: JournalService) -> None:
        super().__init__()
        self.reporter = reporter
        self.client = client
        self.outbox = outbox


def build_report_service(
    reactor,
    reader: InputReader,
    reader_service: Service,
    connect: str,
    interval: float = 2.0,
    on_change: bool = False,
    heartbeat: float = 60.0,
    max_delay: float = 60.0,
    dead_peer_timeout: float = DEFAULT_DEAD_PEER_TIMEOUT,
    *,
    outbox: Journal | str | PathLike | None = None,
    outbox_max_bytes: int | None = None,
    device: str | None = None,
    protocol: str = "auto",
    hello_timeout: float = 3.0,
    window: int = DEFAULT_WINDOW,
    status_listen: str | None = None,
    on_reading: Callable[[v2.Reading], object] | None = None,
    on_ack: Callable[[int], object] | None = None,
    clock_state: ClockState | None = None,
) -> ReportService:
    """
    The whole reporter: the read pool, the outbox, the sampling, and a
    connection to the client endpoint C{connect} kept open for as long as
    the service runs.

    @param dead_peer_timeout: seconds without an answer before the link
        counts as dead (see L{rpisensor.net.deadpeer}; in v2 also the
        heartbeat, every third of it); 0: never.
    @param outbox: the outbox's L{Journal}, or its file; C{None}: in memory only.
    @param device: this Pi's id; by default L{default_device_id}.
    @param protocol: C{"auto"}, C{"2"} or C{"1"} (see L{StreamSettings}).
    @param status_listen: a server endpoint answering C{status}, or C{None}.
    @param on_reading: called with each reading once it is in the outbox.
    @param on_ack: called with each cumulative acknowledgement of the collector.
    """
    from rpisensor.stream.identity import default_device_id

    journal = outbox if isinstance(outbox, Journal) else Journal(outbox)
    outbox_service = OutboxService(reactor, journal, max_bytes=outbox_max_bytes)
    stream = StreamSettings(
        device or default_device_id(), protocol, hello_timeout,
        interval_for(dead_peer_timeout) if dead_peer_timeout > 0 else None, window,
    )  # fmt: skip
    state = InputState.for_reader(reader, reactor) if on_change else None
    reporter = Reporter(
        reader, reactor, interval, on_change, heartbeat, outbox_service, stream, clock_state,
        on_reading, on_ack, state,
    )  # fmt: skip
    client = reconnecting_client(
        reactor, connect, ReportFactory(reporter), max_delay, dead_peer_timeout=dead_peer_timeout
    )
    # Started in this order, stopped last added first: the sampling (which
    # stops sending), the connection, the status listener, the outbox, the reads.
    top = ReportService(reporter, client, outbox_service)
    reader_service.setServiceParent(top)
    outbox_service.setServiceParent(top)
    if state is not None:
        state.setServiceParent(top)
    if status_listen is not None:
        from rpisensor.roles.report.status import status_service

        status_service(reactor, status_listen, reporter).setServiceParent(top)
    client.setServiceParent(top)
    ReporterService(reporter).setServiceParent(top)
    return top


def make_service(options, reactor) -> ReportService:
    """C{report} as its options say."""
    from rpisensor.roles._inputs import open_inputs

    settings = options.journal_settings()
    journal = Journal(
        settings.path,
        max_entries=settings.max_entries if settings.max_entries is not None else 1_000_000,
        sync=settings.sync,
    )
    if options.unusable_cn is not None:
        Reporter._log.warn(
            "The client certificate's CN {cn!r} cannot be a device id (1 to 64 letters, digits, "
            "'.', '_', ':' or '-'): using {device!r}. A collector with --client-ca refuses a device "
            "that is not its certificate's CN: give the certificate a CN such as pi-kitchen, or "
            "give --device.",
            cn=options.unusable_cn, device=options.device_id(),
        )  # fmt: skip
    if options.status_problem is not None:
        Reporter._log.warn("{problem}.", problem=options.status_problem)
    reader, pool = open_inputs(options, reactor)
    service = build_report_service(
        reactor, reader, pool, options["connect"], options["interval"], options["on-change"],
        options["heartbeat"], options["max-delay"], options["dead-peer-timeout"],
        outbox=journal, outbox_max_bytes=settings.max_bytes, device=options.device_id(),
        protocol=options["protocol"], hello_timeout=options["hello-timeout"], window=settings.window,
        status_listen=options["status-listen"],
    )  # fmt: skip
    if options["sim-patterns"]:
        from rpisensor.hw.patterns import PatternService

        if reader.backend.name != "sim":
            raise SystemExit("rpisensor: --sim-pattern needs simulated pins, but real pins are in use")
        PatternService(reactor, reader.backend, reader.inputs, options["sim-patterns"]).setServiceParent(service)
    return service
