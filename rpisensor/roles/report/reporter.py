"""
The reporter: samples the inputs every few seconds and sends their text over
a connection kept open with reconnects.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.net.reconnect import reconnecting_client
from rpisensor.net.request import ClientConnection
from rpisensor.app.stopping import StopInOrder
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
    """

    _log = Logger()

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
            self._send(text)

    def _read_failed(self, failure: Failure, name: str) -> None:
        self._log.warn(
            "Reading input {name} failed: {error}; will try again in {interval} s.",
            name=name,
            error=failure.getErrorMessage(),
            interval=self.interval,
        )

    def send_all(self) -> None:
        """Send the latest text of every input (heartbeat, and on connect)."""
        for text in self.latest.values():
            self._send(text)

    def _send(self, text: str) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport.disconnecting:
            return
        protocol.sendMessage(text)
        self._log.debug("Sent {text}", text=text)

    def attach(self, protocol: ReportProtocol) -> None:
        """A connection is up: send the current state now (or when the first sample ends)."""
        self._protocol = protocol
        if self.latest:
            self.send_all()
        else:
            self.sample()

    def detach(self, protocol: ReportProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None


class ReportProtocol(ClientConnection):
    """The reporter's connection; what the server says back is logged."""

    _log = Logger()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.reporter.attach(self)

    def messageReceived(self, text: str) -> None:
        self._log.info("Message from server: {text}", text=text)

    def connectionLost(self, reason: Failure) -> None:
        self.factory.reporter.detach(self)
        super().connectionLost(reason)


class ReportFactory(Factory):
    protocol = ReportProtocol
    noisy = False

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter


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
) -> ReportService:
    """
    The whole reporter: the read pool, the sampling, and a connection to the
    client endpoint C{connect} kept open for as long as the service runs.
    """
    reporter = Reporter(reader, reactor, interval, on_change, heartbeat)
    client = reconnecting_client(reactor, connect, ReportFactory(reporter), max_delay)
    top = ReportService(reporter, client)  # the connection and the sampling stop before the reads
    reader_service.setServiceParent(top)
    ReporterService(reporter).setServiceParent(top)
    client.setServiceParent(top)
    return top


def make_service(options, reactor) -> ReportService:
    """C{report} as its options say."""
    from rpisensor.roles._inputs import open_inputs

    reader, pool = open_inputs(options, reactor)
    return build_report_service(
        reactor, reader, pool, options["connect"], options["interval"], options["on-change"],
        options["heartbeat"], options["max-delay"],
    )  # fmt: skip
