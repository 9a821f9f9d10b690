"""Tests for rpisensor.roles.report: sampling, on-change, heartbeat, reconnect; on Clock."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.reader import InputReader
from rpisensor.roles.report.reporter import ReportFactory, Reporter
from rpisensor.testing import inline_runner, simulated_pins


class ReporterHarness:
    def __init__(self, **options):
        self.clock = Clock()
        self.backend = simulated_pins(clock=self.clock)
        reader = InputReader(self.backend, [DEFAULT_INPUT], inline_runner, self.clock)
        reader.setup()
        self.reporter = Reporter(reader, self.clock, **options)
        self.factory = ReportFactory(self.reporter)

    def tick(self, seconds):
        """Advance time, then let the turn's queued reads run."""
        self.clock.advance(seconds)
        self.clock.advance(0)

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.clock.advance(0)
        return protocol, transport


def sent(transport):
    data = transport.value()
    transport.clear()
    return [m.decode() for m in data.split(b"\0")[:-1]]


class ReportTests(SynchronousTestCase):
    def test_sends_state_every_interval(self):
        """Every interval the button's text is sent, as DataClient3 does."""
        h = ReporterHarness(interval=2.0)
        h.reporter.start()
        h.clock.advance(0)
        _, transport = h.connect()
        self.assertEqual(sent(transport), ["Button released"])
        h.backend.pin(24).drive_low()
        h.tick(2.0)
        self.assertEqual(sent(transport), ["Button pressed"])
        h.tick(2.0)
        self.assertEqual(sent(transport), ["Button pressed"])

    def test_keeps_sampling_while_disconnected_and_sends_current_on_reconnect(self):
        """Readings taken while the link is down are not queued; the current one goes at once."""
        h = ReporterHarness(interval=1.0)
        h.reporter.start()
        h.clock.advance(0)
        protocol, transport = h.connect()
        sent(transport)
        protocol.connectionLost(Failure(ConnectionLost()))
        for level in (False, True, False):
            h.backend.set_level(24, level)
            h.tick(1.0)
        self.assertEqual(h.backend.reads, 4)  # sampling went on while down
        _, again = h.connect()
        self.assertEqual(sent(again), ["Button pressed"])

    def test_on_change_sends_only_changes(self):
        """With on_change, an unchanged state is not sent again."""
        h = ReporterHarness(interval=1.0, on_change=True, heartbeat=60.0)
        h.reporter.start()
        h.clock.advance(0)
        _, transport = h.connect()
        self.assertEqual(sent(transport), ["Button released"])
        h.tick(1.0)
        h.tick(1.0)
        self.assertEqual(sent(transport), [])
        h.backend.pin(24).drive_low()
        h.tick(1.0)
        self.assertEqual(sent(transport), ["Button pressed"])

    def test_heartbeat(self):
        """With on_change, every input's state is sent each heartbeat, changed or not."""
        h = ReporterHarness(interval=1.0, on_change=True, heartbeat=5.0)
        h.reporter.start()
        h.clock.advance(0)
        _, transport = h.connect()
        sent(transport)
        h.tick(1.0)
        h.tick(1.0)
        h.tick(1.0)
        h.tick(1.0)
        self.assertEqual(sent(transport), [])
        h.tick(1.0)
        self.assertEqual(sent(transport), ["Button released"])

    def test_read_failure_sends_nothing(self):
        """A failing read is logged, nothing is sent, and sampling goes on."""
        h = ReporterHarness(interval=1.0)
        h.reporter.start()
        h.clock.advance(0)
        _, transport = h.connect()
        sent(transport)
        h.backend.fail_reads("probe unplugged")
        h.tick(1.0)
        self.assertEqual(sent(transport), [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        h.backend.fail_reads(None)
        h.tick(1.0)
        self.assertEqual(sent(transport), ["Button released"])

    def test_stop(self):
        """After stop, no more reads happen."""
        h = ReporterHarness(interval=1.0)
        h.reporter.start()
        h.clock.advance(0)
        h.reporter.stop()
        reads = h.backend.reads
        h.tick(5.0)
        self.assertEqual(h.backend.reads, reads)


class CachedReadingTests(SynchronousTestCase):
    def test_cached_readings_do_not_stall_sampling(self):
        """With max-age, samples answered from the cache still let the next sample run."""
        clock = Clock()
        backend = simulated_pins(clock=clock)
        reader = InputReader(backend, [DEFAULT_INPUT], inline_runner, clock, max_age=100.0)
        reader.setup()
        reporter = Reporter(reader, clock, interval=1.0)
        reporter.start()
        clock.advance(0)
        protocol = ReportFactory(reporter).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        transport.clear()
        for _ in range(3):
            clock.advance(1.0)
        self.assertEqual(sent(transport), ["Button released"] * 3)
        self.assertEqual(backend.reads, 1)
