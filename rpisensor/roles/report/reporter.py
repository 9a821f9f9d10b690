"""
The reporter: samples the inputs every few seconds and sends their text over
a connection kept open with reconnects.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.app.stopping import StopInOrder
from rpisensor.net.peers import peer_text
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT, reconnecting_client
from rpisensor.net.request import ClientConnection
from rpisensor.net.wording import NamedLogger
from rpisensor.sensing.reader import InputReader
from rpisensor.sensing.reading import Reading


class Reporter:
    """
    Samples every input each C{interval} seconds and sends the readings' text
    over the connection, when there is one.

    With C{on_change}, only inputs whose text changed are sent, plus every
    input's text each C{heartbeat} seconds so the server knows the Pi is alive.
    When a connection is made the current state is sent at once. Readings taken
    while disconnected are not queued: on reconnect only the current state goes.

    While the server has paused the connection (it cannot keep up, e.g. a
    slow disk), sampling goes on and nothing is sent: the inputs that had
    something to send are remembered, and on resume each one's latest text
    goes, once. So what waits is bounded by the number of inputs.
    """

    _log = NamedLogger("rpisensor.report")

    def __init__(
        self,
        reader: InputReader,
        clock,
        interval: float = 2.0,
        on_change: bool = False,
        heartbeat: float = 60.0,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.interval = interval
        self.on_change = on_change
        self.heartbeat = heartbeat
        self.latest: dict[str, str] = {}
        self._protocol: ReportProtocol | None = None
        self._unsent: set[str] = set()
        self._sampling_now: Deferred | None = None
        self._sampling = LoopingCall(self.sample)
        self._sampling.clock = clock
        self._heartbeat = LoopingCall(self.send_all)
        self._heartbeat.clock = clock

    def start(self) -> None:
        self._sampling.start(self.interval, now=True)
        if self.on_change:
            self._heartbeat.start(self.heartbeat, now=False)

    def stop(self) -> None:
        for loop in (self._sampling, self._heartbeat):
            if loop.running:
                loop.stop()
        if self._protocol is not None:
            self._protocol.stop_being_producer()

    def sample(self) -> Deferred:
        """
        Read every input once; send what the mode says to send. A sample still
        in progress (slow sensor) is shared, not doubled.
        """
        if self._sampling_now is not None:
            return self._sampling_now
        reads = [
            self.reader.read(name).addCallbacks(self._sampled, self._read_failed, errbackArgs=(name,))
            for name in self.reader.inputs
        ]
        sampling = self._sampling_now = DeferredList(reads)
        sampling.addCallback(self._sample_done)  # may run at once, if every reading was cached
        return sampling

    def _sample_done(self, result):
        self._sampling_now = None
        return result

    def _sampled(self, reading: Reading) -> None:
        name, text = reading.input.name, reading.text
        changed = self.latest.get(name) != text
        self.latest[name] = text
        if changed or not self.on_change:
            self._send(name)

    def _read_failed(self, failure: Failure, name: str) -> None:
        pass  # the reader logs a failing input once per kind of failure, and when it reads again

    def send_all(self) -> None:
        """Send the latest text of every input (heartbeat, and on connect)."""
        for name in list(self.latest):
            self._send(name)

    def _send(self, name: str) -> None:
        protocol = self._protocol
        if protocol is None:
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

    def attach(self, protocol: ReportProtocol) -> None:
        """A connection is up: send the current state now (or when the first sample ends)."""
        self._protocol = protocol
        self._unsent.clear()
        if self.latest:
            self.send_all()
        else:
            self.sample()

    def resumed(self, protocol: ReportProtocol) -> None:
        """The server takes data again: send the latest text of what waited, in input order."""
        if protocol is not self._protocol:
            return
        for name in [name for name in self.latest if name in self._unsent]:
            if protocol.paused:  # paused again by the sends just made: the rest keeps waiting
                return
            self._unsent.discard(name)
            self._send(name)

    def detach(self, protocol: ReportProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self._unsent.clear()


@implementer(IPushProducer)
class ReportProtocol(ClientConnection):
    """
    The reporter's connection; what the server says back is logged
    (rate-limited). It is the producer of its transport, so that a server
    that stops reading pauses the sending rather than filling buffers.
    """

    _log = NamedLogger("rpisensor.report")

    #: Whether the transport asked us to stop sending.
    paused = False
    _producing = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.registerProducer(self, True)
        self._producing = True
        self.factory.reporter.attach(self)

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.peer_log.info(
                "{peer} is not taking data for now; sampling goes on, and the latest state "
                "goes when it takes data again.",
                peer=peer_text(self.transport),
            )

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.factory.reporter.resumed(self)

    def stopProducing(self) -> None:
        pass  # the connection is ending: connectionLost detaches

    def stop_being_producer(self) -> None:
        """
        Unregister from the transport: nothing more will be sent. A TLS
        transport closes only once its producer is gone, so do this before
        closing the connection.
        """
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def messageFromServer(self, text: str) -> None:
        self.peer_log.info("Message from {peer}: {text}", peer=peer_text(self.transport), text=text)

    def connectionLost(self, reason: Failure) -> None:
        self._producing = False  # the transport let go of its producer
        self.factory.reporter.detach(self)
        super().connectionLost(reason)


class ReportFactory(Factory):
    protocol = ReportProtocol
    noisy = False

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.clock = reporter.clock


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
    The whole reporter; stops the connection, then the sampling, then the reads.

    @ivar reporter: the L{Reporter}.
    @ivar client: the service keeping the connection open.
    """

    def __init__(self, reporter: Reporter, client) -> None:
        super().__init__()
        self.reporter = reporter
        self.client = client


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
) -> ReportService:
    """
    The whole reporter: the read pool, the sampling, and a connection to the
    client endpoint C{connect} kept open for as long as the service runs.

    @param dead_peer_timeout: seconds without an answer at the TCP level
        before the link counts as dead (see L{rpisensor.net.deadpeer}); 0: never.
    """
    reporter = Reporter(reader, reactor, interval, on_change, heartbeat)
    client = reconnecting_client(
        reactor, connect, ReportFactory(reporter), max_delay, dead_peer_timeout=dead_peer_timeout
    )
    # Stopped last added first: the sampling (which stops sending), the connection, the reads.
    top = ReportService(reporter, client)
    reader_service.setServiceParent(top)
    client.setServiceParent(top)
    ReporterService(reporter).setServiceParent(top)
    return top


def make_service(options, reactor) -> ReportService:
    """C{report} as its options say."""
    from rpisensor.roles._inputs import open_inputs

    reader, pool = open_inputs(options, reactor)
    return build_report_service(
        reactor, reader, pool, options["connect"], options["interval"], options["on-change"],
        options["heartbeat"], options["max-delay"], options["dead-peer-timeout"],
    )  # fmt: skip
