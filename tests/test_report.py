"""Tests for rpisensor.roles.report: sampling, on-change, heartbeat, reconnect; on Clock."""

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.request import PEER_LINE_BURST
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.reader import InputReader
from rpisensor.roles.report.connection import ReportFactory
from rpisensor.roles.report.outbox import OutboxService
from rpisensor.roles.report.reporter import Reporter, StreamSettings
from rpisensor.stream.journal import Journal
from rpisensor.testing import inline_runner, simulated_pins
from tests.support import DOOR


class ReporterHarness:
    def __init__(self, inputs=(DEFAULT_INPUT,), **options):
        self.clock = Clock()
        self.backend = simulated_pins(clock=self.clock)
        reader = InputReader(self.backend, list(inputs), inline_runner, self.clock, wall=self.clock.seconds)
        reader.setup()
        self.outbox = OutboxService(self.clock, Journal(None), runner=inline_runner)
        self.outbox.startService()
        self.reporter = Reporter(reader, self.clock, self.outbox, StreamSettings("pi-test", "1"), **options)
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
    #: How the reporter is built and connected (a subclass runs these tests after a v2 fallback).
    Harness = ReporterHarness

    def test_sends_state_every_interval(self):
        """Every interval the button's text is sent, as DataClient3 does."""
        h = self.Harness(interval=2.0)
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
        h = self.Harness(interval=1.0)
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
        h = self.Harness(interval=1.0, on_change=True, heartbeat=60.0)
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
        h = self.Harness(interval=1.0, on_change=True, heartbeat=5.0)
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
        h = self.Harness(interval=1.0)
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
        h = self.Harness(interval=1.0)
        h.reporter.start()
        h.clock.advance(0)
        h.reporter.stop()
        reads = h.backend.reads
        h.tick(5.0)
        self.assertEqual(h.backend.reads, reads)


class BackpressureTests(SynchronousTestCase):
    """The server pauses the reporter (its transport's buffer is full): sampling goes on, sending stops."""

    Harness = ReporterHarness

    def setUp(self):
        self.h = self.Harness(inputs=(DEFAULT_INPUT, DOOR), interval=1.0)
        self.h.reporter.start()
        self.h.clock.advance(0)
        self.protocol, self.transport = self.h.connect()
        sent(self.transport)

    def test_registered_as_a_streaming_producer(self):
        """The connection is its transport's push producer, so the transport can pause it."""
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)

    def test_stop_unregisters_the_producer(self):
        """
        Stopping the reporter unregisters it, before the connection is closed: a TLS transport
        closes only once its producer is gone (else stopping would hang).
        """
        self.assertIs(self.transport.producer, self.protocol)
        self.h.reporter.stop()
        self.assertIsNone(self.transport.producer)

    def test_closed_by_someone_else_unregisters(self):
        """A connection closed under the reporter (not by its stop) is let go at the next send."""
        self.assertIs(self.transport.producer, self.protocol)
        self.transport.loseConnection()
        self.h.tick(1.0)
        self.assertIsNone(self.transport.producer)
        self.assertEqual(sent(self.transport), [])

    def test_paused_sends_nothing_and_keeps_sampling(self):
        """While paused nothing is written, however long, and the inputs are still read."""
        self.protocol.pauseProducing()
        reads = self.h.backend.reads
        for _ in range(100):
            self.h.tick(1.0)
        self.assertEqual(sent(self.transport), [])
        self.assertEqual(self.h.backend.reads, reads + 200)

    def test_resume_sends_the_latest_state_once(self):
        """On resume, each input that had something to send sends its latest text, once."""
        self.protocol.pauseProducing()
        self.h.backend.pin(24).drive_low()
        self.h.tick(1.0)
        self.h.backend.pin(24).drive_high()
        self.h.backend.set_level(18, True)
        for _ in range(10):
            self.h.tick(1.0)
        self.protocol.resumeProducing()
        self.assertEqual(sent(self.transport), ["Button released", "open"])
        self.h.tick(1.0)
        self.assertEqual(sent(self.transport), ["Button released", "open"])

    def test_on_change_resume_sends_only_what_changed(self):
        """With --on-change, only the inputs that changed while paused are sent on resume."""
        h = self.Harness(inputs=(DEFAULT_INPUT, DOOR), interval=1.0, on_change=True, heartbeat=600.0)
        h.reporter.start()
        h.clock.advance(0)
        protocol, transport = h.connect()
        sent(transport)
        protocol.pauseProducing()
        h.backend.set_level(18, True)
        h.tick(1.0)
        protocol.resumeProducing()
        self.assertEqual(sent(transport), ["open"])

    def test_paused_again_while_catching_up(self):
        """A resume that fills the buffer again at once leaves the rest for the next resume."""
        self.protocol.pauseProducing()
        self.h.tick(1.0)
        original = self.protocol.sendMessage

        def send_and_fill(text):
            original(text)
            self.protocol.pauseProducing()  # as the transport does when its buffer is full

        self.protocol.sendMessage = send_and_fill
        self.protocol.resumeProducing()
        self.assertEqual(sent(self.transport), ["Button released"])
        del self.protocol.sendMessage
        self.protocol.resumeProducing()
        self.assertEqual(sent(self.transport), ["closed"])

    def test_new_connection_starts_afresh(self):
        """What waited on a paused connection that is then lost is not sent twice on the next one."""
        self.protocol.pauseProducing()
        self.h.tick(1.0)
        self.protocol.connectionLost(Failure(ConnectionLost()))
        _, again = self.h.connect()
        self.assertEqual(sent(again), ["Button released", "closed"])


class ReportLogTests(SynchronousTestCase):
    Harness = ReporterHarness

    def test_failing_input_is_not_logged_forever(self):
        """A read that fails every interval is logged once (by the reader), not each time; recovery is said."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = self.Harness(interval=1.0)
        h.backend.fail_reads("probe unplugged")
        h.reporter.start()
        for _ in range(120):
            h.tick(1.0)
        failed = [e for e in events if "failed" in e["log_format"] and e.get("name") == "button"]
        self.assertEqual(len(failed), 1, [formatEvent(e) for e in failed])
        self.assertIn("probe unplugged", formatEvent(failed[0]))
        h.backend.fail_reads(None)
        h.tick(1.0)
        self.assertIn("Input button reads again.", [formatEvent(e) for e in events])

    def test_messages_from_the_server_are_rate_limited(self):
        """Every message a server sends is logged, but only so many a minute."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = self.Harness(interval=1.0)
        h.reporter.start()
        protocol, _ = h.connect()
        protocol.dataReceived(b"hello\0" * 1000)
        logged = [e for e in events if e["log_format"] == "Message from {peer}: {text}"]
        self.assertEqual(len(logged), PEER_LINE_BURST)


class CachedReadingTests(SynchronousTestCase):
    def test_cached_readings_do_not_stall_sampling(self):
        """With max-age, samples answered from the cache still let the next sample run."""
        clock = Clock()
        backend = simulated_pins(clock=clock)
        reader = InputReader(backend, [DEFAULT_INPUT], inline_runner, clock, max_age=100.0, wall=clock.seconds)
        reader.setup()
        outbox = OutboxService(clock, Journal(None), runner=inline_runner)
        outbox.startService()
        reporter = Reporter(reader, clock, outbox, StreamSettings("pi-test", "1"), interval=1.0)
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


class ImportTests(SynchronousTestCase):
    def test_package_exports_the_builder(self):
        """The embedding guide's C{rpisensor.roles.report.build_report_service} is the reporter's builder."""
        import rpisensor.roles.report
        from rpisensor.roles.report import service

        self.assertIs(rpisensor.roles.report.build_report_service, service.build_report_service)
