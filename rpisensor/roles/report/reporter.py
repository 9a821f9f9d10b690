"""
The reporter's sampling: every input each interval (or each change), every
sensor on its own interval, into the outbox; and what the program embedding
the reporter hears (each reading committed, each acknowledgement). How the
readings leave the Pi is the connection's business (L{rpisensor.roles.report.connection}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall

from rpisensor.entries import Entry, Reading
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT
from rpisensor.net.wording import NamedLogger
from rpisensor.roles.report.options import DEFAULT_WINDOW
from rpisensor.sensing.reader import InputReader
from rpisensor.sensing.sample import Sample
from rpisensor.stream.follower import ChangeFollower
from rpisensor.stream.heartbeat import interval_for
from rpisensor.stream.identity import ClockState
from rpisensor.stream.measuring import MeasurementSampler
from rpisensor.stream.journal_service import JournalService
from rpisensor.stream.sampler import Sampler
from rpisensor.stream.state import InputState

@dataclass(frozen=True)
class StreamSettings:
    """
    How the reporter speaks to its collector.

    @ivar device: this Pi's id in its hello.
    @ivar protocol: C{"auto"} (offer v2, else plain text), C{"2"} (v2 only),
        C{"1"} (plain text only, no hello).
    @ivar hello_timeout: seconds to wait for the welcome before plain text is
        tried (C{auto}); a welcome that comes later still turns the connection to v2.
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
    into the C{outbox}; with C{on_change} and a driver that reports each change
    (kernel edges), those inputs are recorded as they change instead.

    Each sample's text also goes to the text listeners (a plain-text
    connection, the tutorial's DataClient3): with C{on_change}, only the texts
    that changed, plus every input's text each C{heartbeat} seconds.

    @ivar latest: each input's latest text.
    @ivar last_ack: when the collector last acknowledged, as C{(seq, clock time)}.
    @ivar connection: the connection in use, if any (its C{mode} says how it speaks).
    @ivar way_out: says whether the outbox's way out is up and how it speaks,
        as C{(connected, protocol)}; by default from C{connection}, and
        C{report --mqtt} puts its broker link's here.
    """

    _log = NamedLogger("rpisensor.report")

    def __init__(
        self,
        reader: InputReader,
        clock,
        outbox: JournalService,
        stream: StreamSettings,
        interval: float = 2.0,
        on_change: bool = False,
        heartbeat: float = 60.0,
        clock_state: ClockState | None = None,
        state: InputState | None = None,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.outbox = outbox
        self.stream = stream
        self.interval = interval
        self.on_change = on_change
        self.heartbeat = heartbeat
        self.latest: dict[str, str] = {}
        self.last_ack: tuple[int, float] | None = None
        self.connection = None
        self.way_out: Callable[[], tuple[bool, str]] = self._connection_state
        #: The way of speaking the log last announced ("1", "2"): said once, not per connection.
        self.mode_told: str | None = None
        self._text_listeners: list[Callable[[str, str], object]] = []
        self._reading_listeners: list[Callable[[Reading], object]] = []
        self._ack_listeners: list[Callable[[int], object]] = []
        self._waiting_for_ack: list[tuple[int, Deferred]] = []
        clock_state = clock_state if clock_state is not None else ClockState()
        followed = state.tracked if state is not None and on_change else set()
        self.follower = ChangeFollower(state, outbox, clock_state, on_reading=self._sampled) if followed else None
        self.sampler = Sampler(
            reader, outbox, clock, interval, on_change, clock_state, on_sample=self._sampled,
            names=[name for name in reader.inputs if name not in followed],
        )  # fmt: skip
        #: The measurement sensors, each on its own interval= and change= (not --interval).
        self.measuring = MeasurementSampler(reader, outbox, clock, clock_state, on_publish=self._sampled)
        self._heartbeat = LoopingCall(self.send_all)
        self._heartbeat.clock = clock
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

    def stop(self) -> Deferred:
        """Stop sampling; fires once the reads in flight were recorded (or gave up)."""
        self.sampler.stop()
        if self.follower is not None:
            self.follower.stop()
        self.measuring.stop()
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self.connection is not None:
            # Nothing more is sent; a TLS transport closes only once its producer is gone.
            self.connection.stop_being_producer()
        return self.reader.when_settled()

    def sample(self) -> Deferred:
        """Read every input once (a sample in progress is shared, not doubled)."""
        return self.sampler.sample()

    # -- plain text ---------------------------------------------------------------------

    def add_text_listener(self, listener: Callable[[str, str], object]) -> None:
        """Call C{listener(name, text)} with each text a plain-text server should get."""
        self._text_listeners.append(listener)

    def remove_text_listener(self, listener) -> None:
        if listener in self._text_listeners:
            self._text_listeners.remove(listener)

    def _sampled(self, sample: Sample) -> None:
        name, text = sample.name, sample.text
        changed = self.latest.get(name) != text
        self.latest[name] = text
        if changed or not self.on_change:
            self._tell(name, text)

    def send_all(self) -> None:
        """Every input's latest text to the text listeners (the --heartbeat, and a new plain connection)."""
        for name, text in list(self.latest.items()):
            self._tell(name, text)

    def _tell(self, name: str, text: str) -> None:
        for listener in list(self._text_listeners):
            _call(listener, self._log, name, text)

    # -- what the embedding program hears ----------------------------------------------

    def add_listeners(
        self,
        on_reading: Callable[[Reading], object] | None = None,
        on_ack: Callable[[int], object] | None = None,
    ) -> None:
        """Also call C{on_reading} per reading committed, C{on_ack} per acknowledgement."""
        if on_reading is not None:
            self._reading_listeners.append(on_reading)
        if on_ack is not None:
            self._ack_listeners.append(on_ack)

    def _connection_state(self) -> tuple[bool, str]:
        connection = self.connection
        if connection is None:
            return False, "none"
        return True, {"hello": "negotiating", "1": "1", "2": "2"}.get(connection.mode, "none")

    def when_acknowledged(self, seq: int) -> Deferred:
        """Fires with the ack's seq once the collector has stored everything up to C{seq}."""
        if self.last_ack is not None and self.last_ack[0] >= seq:
            return succeed(self.last_ack[0])
        d: Deferred = Deferred()
        self._waiting_for_ack.append((seq, d))
        return d

    def _committed(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.__class__ is Reading:
                for listener in list(self._reading_listeners):
                    _call(listener, self._log, entry)

    def acknowledged(self, seq: int) -> None:
        """The collector has stored everything up to C{seq} (a connection's sender says so)."""
        self.last_ack = (seq, self.clock.seconds())
        waiting, self._waiting_for_ack = self._waiting_for_ack, []
        for wanted, d in waiting:
            if wanted <= seq:
                d.callback(seq)
            else:
                self._waiting_for_ack.append((wanted, d))
        for listener in list(self._ack_listeners):
            _call(listener, self._log, seq)


def _call(listener, log, *args) -> None:
    try:
        listener(*args)
    except Exception:
        log.failure("A reporter listener ({listener!r}) failed", listener=listener)


class ReporterService(Service):
    """Samples with a L{Reporter} while the service runs; a stop waits for the reads in flight."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def startService(self) -> None:
        super().startService()
        self.reporter.start()

    def stopService(self) -> Deferred:
        super().stopService()
        return self.reporter.stop()
