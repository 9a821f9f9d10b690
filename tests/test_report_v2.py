"""
The reporter speaking v2 (and falling back to v1), on Twisted's doubles: the
reporter's connection and a fake collector (the real receiving side over an
in-memory store) each on a StringTransport, bytes moved between them by the
test, time on a Clock, the outbox's SQLite on an inline runner.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.roles.report.connection import PLAIN_TEXT as NOT_V2
from rpisensor.roles.report.connection import ReportFactory
from rpisensor.roles.report.outbox import OutboxService
from rpisensor.roles.report.reporter import Reporter, StreamSettings
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.reader import InputReader
from rpisensor.stream.journal import Journal
from rpisensor.testing import inline_runner, simulated_pins
from rpisensor.wire import v2
from tests import test_report
from tests.support import DOOR
from tests.v2_collector import FakeCollectorFactory

#: The Clock's start: readings taken then are stamped 2026-12-01T19:33:25.123Z.
START = 1796153605.123
DEVICE = "pi-test"
ERROR_REPLY = b"error: unknown command 'hello'; send 'help' for the list\0"


class Synced:
    def synced(self) -> bool:
        return True


class TCPTransport(StringTransport):
    """A TCP transport's setTcpNoDelay, recorded."""

    no_delay = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def frames(transport: StringTransport) -> list[str]:
    """The whole messages written to C{transport} since the last call; clears it."""
    data = transport.value()
    transport.clear()
    return [m.decode() for m in data.split(b"\0")[:-1]]


class Link:
    """
    One connection between the reporter and the fake collector, each end on
    its own StringTransport; L{pump} moves the bytes both ways.

    @ivar up_budget: how many more bytes may go from the reporter to the
        collector (C{None}: any); L{down_budget} the other way.
    """

    def __init__(self, harness: V2Harness) -> None:
        self.harness = harness
        self.up_budget: int | None = None
        self.down_budget: int | None = None
        self.up_bytes = b""
        self.collector = harness.collector.buildProtocol(None)
        self.collector_transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.0.10", 40000))
        self.collector.makeConnection(self.collector_transport)
        self.reporter = harness.factory.buildProtocol(None)
        self.reporter_transport = TCPTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", 22000))
        self.reporter.makeConnection(self.reporter_transport)
        self.closed = False

    @staticmethod
    def _take(transport: StringTransport, budget: int | None) -> bytes:
        data = transport.value()
        if budget is not None and len(data) > budget:
            rest = data[budget:]
            data = data[:budget]
            transport.clear()
            transport.write(rest)  # not sent yet
            return data
        transport.clear()
        return data

    def pump(self) -> None:
        """Move bytes until neither side has anything more to say (within the budgets)."""
        clock = self.harness.clock
        for _ in range(10_000):
            clock.advance(0)
            if self.closed:
                return
            up = self._take(self.reporter_transport, self.up_budget)
            down = self._take(self.collector_transport, self.down_budget)
            if self.up_budget is not None:
                self.up_budget -= len(up)
            if self.down_budget is not None:
                self.down_budget -= len(down)
            if up:
                self.up_bytes += up
                self.collector.dataReceived(up)
            if down:
                self.reporter.dataReceived(down)
            if self.reporter_transport.disconnecting or self.collector_transport.disconnecting:
                # what was written before the close still arrives, then both ends see it end
                rest_up, rest_down = self.reporter_transport.value(), self.collector_transport.value()
                if rest_up and self.up_budget is None:
                    self.collector.dataReceived(rest_up)
                if rest_down and self.down_budget is None:
                    self.reporter.dataReceived(rest_down)
                self.cut()
                return
            if not up and not down:
                return
        raise AssertionError("the link never went quiet")

    def cut(self) -> None:
        """The link drops: both ends hear it; bytes in flight are lost."""
        if self.closed:
            return
        self.closed = True
        self.reporter_transport.clear()
        self.collector_transport.clear()
        self.reporter.connectionLost(Failure(ConnectionLost()))
        self.collector.connectionLost(Failure(ConnectionLost()))


class V2Harness:
    """A reporter with an outbox (a file, or in memory) and a fake collector, on one Clock."""

    def __init__(
        self,
        test: SynchronousTestCase,
        inputs=(DEFAULT_INPUT,),
        protocol: str = "auto",
        file: bool = False,
        window: int = 1000,
        heartbeat: float | None = 10.0,
        interval: float = 1.0,
        on_change: bool = False,
        collector_heartbeats: bool = True,
        **reporter_options,
    ) -> None:
        self.test = test
        self.clock = Clock()
        self.clock.advance(START)
        self.backend = simulated_pins(clock=self.clock)
        self.reader = InputReader(self.backend, list(inputs), inline_runner, self.clock, wall=self.clock.seconds)
        self.reader.setup()
        self.path = os.path.abspath(test.mktemp() + ".sqlite") if file else None
        self.stream = StreamSettings(DEVICE, protocol, 3.0, heartbeat, window)
        self.interval = interval
        self.on_change = on_change
        self.hooks = {name: reporter_options.pop(name) for name in ("on_reading", "on_ack") if name in reporter_options}
        self.reporter_options = reporter_options
        #: Every reading committed to the outbox, across restarts: what the reporter took.
        self.committed: list[v2.Reading] = []
        self.open_outbox()
        self.collector = FakeCollectorFactory(self.clock, heartbeats=collector_heartbeats)

    def open_outbox(self) -> None:
        self.outbox = OutboxService(self.clock, Journal(self.path, current_boot="boot"), runner=inline_runner)
        self.outbox.startService()
        self.test.addCleanup(self._close_outbox, self.outbox)
        self.reporter = Reporter(
            self.reader, self.clock, self.outbox, self.stream, self.interval, self.on_change, 60.0,
            Synced(), **self.reporter_options,
        )  # fmt: skip
        self.reporter.add_listeners(on_reading=self.committed.append)
        self.reporter.add_listeners(**self.hooks)
        self.factory = ReportFactory(self.reporter)

    @staticmethod
    def _close_outbox(outbox) -> None:
        if outbox.running:
            outbox.stopService()

    def restart_reporter(self) -> None:
        """The reporter stopped (its outbox closed cleanly) and started again on the same file."""
        self.reporter.stop()
        self.outbox.stopService()
        self.open_outbox()
        self.reporter.start()
        self.clock.advance(0)

    def start(self) -> None:
        self.reporter.start()
        self.clock.advance(0)

    def tick(self, seconds: float = None) -> None:
        self.clock.advance(self.interval if seconds is None else seconds)
        self.clock.advance(0)

    def connect(self) -> Link:
        return Link(self)

    def stored(self) -> list[tuple[int, int, str]]:
        return [(r.seq, r.value, r.ts) for r in self.collector.store.readings()]

    def taken(self) -> list[tuple[int, int, str]]:
        """Every reading the reporter took (committed to its outbox), in order."""
        return [(e.seq, e.value, e.ts) for e in self.committed]


class HandshakeTests(SynchronousTestCase):
    def test_hello_then_stream(self) -> None:
        """The reporter says hello (who it is, its stream, heartbeat, last seq); after welcome it streams."""
        h = V2Harness(self)
        h.start()
        h.tick()
        link = h.connect()
        [hello] = frames(link.reporter_transport)
        journal = h.outbox.journal
        self.assertEqual(
            v2.parse(hello),
            v2.Hello("report", DEVICE, journal.stream, 10.0, last=2, owner=journal.secret,
                     incarnation=journal.incarnation),
        )  # fmt: skip
        link.reporter_transport.write(hello.encode() + b"\0")  # (frames() took it: give it back)
        link.pump()
        self.assertEqual(link.reporter.mode, "2")
        self.assertEqual(h.collector.store.seqs(), [1, 2])
        h.tick()
        link.pump()
        self.assertEqual(h.stored(), h.taken())
        self.assertEqual([r.text for r in h.collector.store.readings()], ["Button released"] * 3)
        self.assertEqual(h.outbox.acked, 3)
        self.assertEqual(h.reporter.last_ack, (3, START + 2.0))
        self.assertEqual(h.collector.plain, [])

    def test_v2_sends_at_once(self) -> None:
        """Once welcomed, the link turns Nagle's algorithm off: a reading never waits for a delayed ACK."""
        h = V2Harness(self)
        h.start()
        link = h.connect()
        self.assertIsNone(link.reporter_transport.no_delay)  # while saying hello: as before
        link.pump()
        self.assertEqual(link.reporter.mode, "2")
        self.assertTrue(link.reporter_transport.no_delay)

    def test_welcome_acked_resumes_there(self) -> None:
        """The sender starts after the welcome's acked: what the collector has is not sent again."""
        h = V2Harness(self)
        h.start()
        for _ in range(4):
            h.tick()
        link = h.connect()
        link.pump()
        link.cut()
        sent = len([f for f in h.collector.frames if f.startswith("reading")])
        h.tick()
        link = h.connect()
        link.pump()
        again = [f for f in link.collector.frames if f.startswith("reading")]
        self.assertEqual(sent, 5)
        self.assertEqual([v2.parse(f).seq for f in again], [6])
        self.assertEqual(h.collector.store.seqs(), [1, 2, 3, 4, 5, 6])

    def test_welcome_without_acked_is_left(self) -> None:
        """A welcome without 'acked' is not a collector's (a serve?): the reporter leaves, backing off."""
        h = V2Harness(self)
        h.start()
        link = h.connect()
        frames(link.reporter_transport)
        link.reporter.dataReceived(b'welcome {"v":2,"device":"pi","stream":"abc","first":1,"last":3}\0')
        self.assertTrue(link.reporter_transport.disconnecting)
        self.assertIsNotNone(link.reporter.parting_error)  # so the reconnect backs off
        self.assertEqual(frames(link.reporter_transport), [])

    def test_broken_welcome_is_left(self) -> None:
        """A welcome that cannot be read: the reporter leaves, nothing sent."""
        h = V2Harness(self)
        h.start()
        link = h.connect()
        frames(link.reporter_transport)
        link.reporter.dataReceived(b'welcome {"v":2,"acked":-1}\0')
        self.assertTrue(link.reporter_transport.disconnecting)
        self.assertEqual(frames(link.reporter_transport), [])

    def test_collector_ahead_makes_a_new_stream(self) -> None:
        """
        A collector with more of the stream than the outbox (an older copy of the
        outbox): the outbox goes on as a new stream carrying what the collector
        does not hold, says so loudly, and reconnects to send it.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = V2Harness(self)
        h.start()
        old = h.outbox.journal.stream
        link = h.connect()
        frames(link.reporter_transport)
        link.reporter.dataReceived(b'welcome {"v":2,"acked":50}\0')
        [probe] = frames(link.reporter_transport)
        self.assertEqual(v2.parse(probe), v2.Probe(1))  # does the collector hold entry 1 as this outbox does?
        link.reporter.dataReceived(b'match {"seq":1}\0')  # no
        self.assertTrue(link.reporter_transport.disconnecting)
        self.assertNotEqual(h.outbox.journal.stream, old)
        self.assertEqual((h.outbox.journal.first, h.outbox.journal.last), (1, 1))
        self.assertTrue(any("went its own way" in formatEvent(e) for e in events))

    def test_messages_before_the_answer_are_logged_not_taken(self) -> None:
        """A line that is neither welcome nor error: (v1 chatter) does not end the wait."""
        h = V2Harness(self)
        h.start()
        link = h.connect()
        frames(link.reporter_transport)
        link.reporter.dataReceived(b"Message received\0")
        self.assertEqual(link.reporter.mode, "hello")
        h.clock.advance(2.9)
        self.assertEqual(frames(link.reporter_transport), [])


class FallbackTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def told(self) -> list[str]:
        return [formatEvent(e) for e in self.events if NOT_V2 in formatEvent(e)]

    def connect_to_v1(self, h: V2Harness):
        protocol = h.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", 22000))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_silent_peer_gets_plain_text_after_the_timeout(self) -> None:
        """A peer that never answers the hello (DataServer3) gets plain text after --hello-timeout, said once."""
        h = V2Harness(self, interval=10.0)
        h.start()
        protocol, transport = self.connect_to_v1(h)
        [hello] = frames(transport)
        self.assertTrue(hello.startswith('hello {"v":2,"role":"report"'))
        h.clock.advance(2.9)
        self.assertEqual(frames(transport), [])
        h.clock.advance(0.1)
        self.assertEqual(protocol.mode, "1")
        self.assertEqual(frames(transport), ["Button released"])
        h.tick()
        self.assertEqual(frames(transport), ["Button released"])
        [line] = self.told()
        self.assertIn("192.168.0.17:22000: it did not answer our hello within 3 s", line)
        # the next connection to it says nothing new
        protocol.connectionLost(Failure(ConnectionLost()))
        protocol, transport = self.connect_to_v1(h)
        h.clock.advance(3.0)
        self.assertEqual(frames(transport)[1:], ["Button released"])
        self.assertEqual(len(self.told()), 1)

    def test_error_reply_gets_plain_text_at_once(self) -> None:
        """A peer that answers the hello with error: (an older serve or collect) gets plain text at once."""
        h = V2Harness(self)
        h.start()
        protocol, transport = self.connect_to_v1(h)
        frames(transport)
        protocol.dataReceived(ERROR_REPLY)
        self.assertEqual(frames(transport), ["Button released"])
        [line] = self.told()
        self.assertIn("it answered our hello with \"error: unknown command 'hello'", line)

    def test_refusal_is_no_answer(self) -> None:
        """A server turning the reporter away (error: refused ...) is a refusal, not a v1 peer."""
        h = V2Harness(self)
        h.start()
        protocol, transport = self.connect_to_v1(h)
        frames(transport)
        protocol.dataReceived(b"error: refused: 192.168.0.10 is not in the allowed networks\0")
        self.assertEqual(protocol.mode, "hello")
        self.assertEqual(frames(transport), [])
        self.assertEqual(protocol.parting_error, "error: refused: 192.168.0.10 is not in the allowed networks")
        self.assertEqual(self.told(), [])

    def test_plain_text_lets_nothing_go(self) -> None:
        """
        Plain text acknowledges nothing: what a v1 peer was handed stays in the
        outbox (bounded by --outbox-max) until a collector stores it. (It used to
        let the whole outbox go at the fallback, backlog included.)
        """
        h = V2Harness(self)
        h.start()
        protocol, transport = self.connect_to_v1(h)
        protocol.dataReceived(ERROR_REPLY)
        for _ in range(5):
            h.tick()
        self.assertEqual(h.outbox.journal.last, 6)
        self.assertEqual(h.outbox.acked, 0)
        self.assertIsNone(h.reporter.last_ack)

    def test_protocol_1_never_says_hello(self) -> None:
        """--protocol 1: plain text from the first byte; the tutorial's server sees nothing new."""
        h = V2Harness(self, protocol="1")
        h.start()
        protocol, transport = self.connect_to_v1(h)
        self.assertEqual(frames(transport), ["Button released"])
        self.assertEqual(self.told(), [])

    def test_protocol_2_leaves_a_silent_peer(self) -> None:
        """--protocol 2: a peer that does not answer is left (no plain text), and the reconnect backs off."""
        h = V2Harness(self, protocol="2")
        h.start()
        protocol, transport = self.connect_to_v1(h)
        frames(transport)
        h.clock.advance(3.0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(frames(transport), [])
        self.assertIsNotNone(protocol.parting_error)  # what the reconnecting client reads: back off
        lines = [formatEvent(e) for e in self.events]
        self.assertTrue(any("With --protocol 2 no plain text is sent" in line for line in lines), lines)
        protocol.connectionLost(Failure(ConnectionLost()))
        lines = [formatEvent(e) for e in self.events]
        self.assertFalse(any("the server said" in line for line in lines), lines)

    def test_protocol_2_leaves_an_error_reply(self) -> None:
        """--protocol 2: an error: reply to the hello: left at once."""
        h = V2Harness(self, protocol="2")
        h.start()
        protocol, transport = self.connect_to_v1(h)
        frames(transport)
        protocol.dataReceived(ERROR_REPLY)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(frames(transport), [])


class FallbackHarness(test_report.ReporterHarness):
    """
    The v1 tests' harness, but with an outbox and v2 offered: each
    connection's hello is answered with an error:, so the reporter falls
    back to plain text, and everything after must be today's behaviour.
    """

    def __init__(self, inputs=(DEFAULT_INPUT,), **options):
        self.clock = Clock()
        self.backend = simulated_pins(clock=self.clock)
        reader = InputReader(self.backend, list(inputs), inline_runner, self.clock, wall=self.clock.seconds)
        reader.setup()
        self.outbox = OutboxService(self.clock, Journal(None), runner=inline_runner)
        self.outbox.startService()
        stream = StreamSettings(DEVICE, "auto", 3.0, 10.0, 1000)
        self.reporter = Reporter(reader, self.clock, outbox=self.outbox, stream=stream, clock_state=Synced(), **options)
        self.factory = ReportFactory(self.reporter)

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        [hello] = test_report.sent(transport)
        assert hello.startswith("hello "), hello
        protocol.dataReceived(ERROR_REPLY)
        self.clock.advance(0)
        return protocol, transport


class ReportTestsAfterFallback(test_report.ReportTests):
    """Every plain-text test of report, after a fallback from v2: exactly today's behaviour."""

    Harness = FallbackHarness


class BackpressureTestsAfterFallback(test_report.BackpressureTests):
    Harness = FallbackHarness


class ReportLogTestsAfterFallback(test_report.ReportLogTests):
    Harness = FallbackHarness


class CutAtEveryByteTests(SynchronousTestCase):
    """
    The link cut at every byte offset of a session, each direction: after a
    reconnect the collector has every reading once, in order, as the outbox
    has it.
    """

    def harness(self) -> V2Harness:
        h = V2Harness(self, inputs=(DEFAULT_INPUT, DOOR), file=True, window=2)
        h.start()
        for level in (True, False, True):
            h.backend.set_level(18, level)
            h.tick()
        return h

    def deliver_after_cut(self, h: V2Harness, up: int | None, down: int | None) -> None:
        link = h.connect()
        link.up_budget, link.down_budget = up, down
        link.pump()
        link.cut()
        h.backend.set_level(24, False)  # one more reading, taken while the link is down
        h.tick()
        link = h.connect()
        link.pump()
        self.assertEqual(h.stored(), h.taken(), f"cut after {up} bytes up, {down} down")
        self.assertEqual([r.seq for r in h.collector.store.readings()], list(range(1, 11)))

    def test_every_offset_up(self) -> None:
        """Cut after each byte the reporter writes (hello, readings): nothing lost or doubled."""
        h = self.harness()
        link = h.connect()
        link.pump()
        total = len(link.up_bytes)
        self.assertEqual(h.collector.store.seqs(), list(range(1, 9)))
        self.assertGreater(total, 8 * 100)
        for offset in range(total + 1):
            self.deliver_after_cut(self.harness(), offset, None)

    def test_every_offset_down(self) -> None:
        """Cut after each byte the collector writes (welcome, acks): nothing lost or doubled."""
        h = self.harness()
        link = h.connect()
        sent = []
        original = link.collector_transport.write

        def counting(data):
            sent.append(data)
            original(data)

        link.collector_transport.write = counting
        link.collector_transport.writeSequence = lambda seq: counting(b"".join(seq))
        link.pump()
        total = len(b"".join(sent))
        self.assertGreater(total, 40)
        for offset in range(total + 1):
            self.deliver_after_cut(self.harness(), None, offset)

    def test_restart_between(self) -> None:
        """Cut mid-frame, the reporter restarted on its outbox file: still every reading once."""
        for offset in (5, 150, 333, 700):
            h = self.harness()
            link = h.connect()
            link.up_budget = offset
            link.pump()
            link.cut()
            h.restart_reporter()
            h.tick()
            link = h.connect()
            link.pump()
            self.assertEqual(h.stored(), h.taken())
            self.assertEqual(h.collector.store.seqs(), list(range(1, h.outbox.journal.last + 1)))
            self.assertGreater(h.outbox.journal.last, 10)


class AckTests(SynchronousTestCase):
    def test_acks_let_the_outbox_go_and_are_told(self) -> None:
        """Each cumulative ack reaches on_ack, and when_acknowledged fires once the seq is stored."""
        acks = []
        readings = []
        h = V2Harness(self, on_reading=readings.append, on_ack=acks.append)
        h.start()
        waiting = h.reporter.when_acknowledged(3)
        link = h.connect()
        link.pump()
        self.assertNoResult(waiting)
        h.tick()
        link.pump()
        self.assertNoResult(waiting)
        h.tick()
        link.pump()
        self.assertEqual(self.successResultOf(waiting), 3)
        self.assertEqual(acks, [1, 2, 3])
        self.assertEqual([(r.seq, r.sensor, r.value) for r in readings], [(1, "button", 0), (2, "button", 0), (3, "button", 0)])
        self.assertEqual(self.successResultOf(h.reporter.when_acknowledged(2)), 3)

    def test_ack_beyond_what_was_sent_is_ignored(self) -> None:
        """An ack for a seq never sent does not let the outbox go."""
        h = V2Harness(self)
        h.start()
        link = h.connect()
        link.pump()
        link.reporter.dataReceived(b'ack {"seq":99}\0')
        self.assertEqual(h.outbox.acked, 1)
        self.assertEqual(h.reporter.last_ack[0], 1)

    def test_malformed_frame_is_logged_and_kept(self) -> None:
        """A malformed frame from the collector is logged; the stream goes on."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = V2Harness(self)
        h.start()
        link = h.connect()
        link.pump()
        link.reporter.dataReceived(b'ack {"seq":"x"}\0')
        self.assertFalse(link.reporter_transport.disconnecting)
        self.assertTrue(any("cannot use" in formatEvent(e) and "'seq'" in formatEvent(e) for e in events))
        h.tick()
        link.pump()
        self.assertEqual(h.collector.store.seqs(), [1, 2])

    def test_collector_restart_dedupes(self) -> None:
        """A collector restarted from its store (high-water marks) gets only what it lacks."""
        h = V2Harness(self)
        h.start()
        link = h.connect()
        link.pump()
        h.tick()
        link.pump()
        link.cut()
        h.collector.restart()
        h.tick()
        link = h.connect()
        link.pump()
        self.assertEqual(h.collector.store.seqs(), [1, 2, 3])
        self.assertEqual([v2.parse(f).seq for f in link.collector.frames if f.startswith("reading")], [3])


class HeartbeatTests(SynchronousTestCase):
    def test_heartbeat_when_nothing_to_send(self) -> None:
        """With nothing to send (on-change, no change), the reporter sends a heartbeat every interval."""
        h = V2Harness(self, on_change=True)
        h.start()
        link = h.connect()
        link.pump()
        before = len(link.collector.frames)
        h.clock.advance(10.0)
        link.pump()
        self.assertEqual(link.collector.frames[before:], ["heartbeat"])

    def test_silent_collector_is_dropped(self) -> None:
        """A collector silent for 3 heartbeat intervals (no ack, no heartbeat) is dropped: the link is dead."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = V2Harness(self, collector_heartbeats=False)
        h.collector.store.slow = True  # no acks either
        h.start()
        link = h.connect()
        link.pump()
        self.assertEqual(link.reporter.mode, "2")
        for _ in range(29):
            h.tick()
            link.pump()
        self.assertFalse(link.reporter_transport.disconnecting)
        h.tick()
        self.assertTrue(link.reporter_transport.disconnected)  # aborted
        self.assertTrue(any("Nothing from 192.168.0.17:22000 for 30 s" in formatEvent(e) for e in events))

    def test_heartbeats_keep_a_quiet_link(self) -> None:
        """A collector that only sends heartbeats (nothing to ack) is alive, however long."""
        h = V2Harness(self, on_change=True)
        h.start()
        link = h.connect()
        link.pump()
        for _ in range(100):
            h.tick()
            link.pump()
        self.assertFalse(link.closed)
        self.assertFalse(link.reporter_transport.disconnecting)

    def test_no_heartbeat_when_turned_off(self) -> None:
        """--dead-peer-timeout 0: no heartbeat announced, none sent, no watch."""
        h = V2Harness(self, heartbeat=None, on_change=True, collector_heartbeats=False)
        h.start()
        link = h.connect()
        hello = v2.parse(link.reporter_transport.value().split(b"\0")[0].decode())
        self.assertIsNone(hello.heartbeat)
        link.pump()
        for _ in range(100):
            h.tick()
            link.pump()
        self.assertNotIn("heartbeat", link.collector.frames)
        self.assertFalse(link.reporter_transport.disconnecting)


class BackpressureV2Tests(SynchronousTestCase):
    def test_pause_stops_sending_not_sampling(self) -> None:
        """Paused by its transport, the reporter sends no reading but keeps sampling into the outbox."""
        h = V2Harness(self, window=1000)
        h.start()
        link = h.connect()
        link.pump()
        link.reporter_transport.producer.pauseProducing()
        for _ in range(20):
            h.tick()
            link.pump()
        self.assertEqual(h.collector.store.seqs(), [1])
        self.assertEqual(h.outbox.journal.last, 21)
        self.assertFalse([f for f in link.collector.frames if f.startswith("reading")][1:])
        link.reporter_transport.producer.resumeProducing()
        link.pump()
        self.assertEqual(h.stored(), h.taken())
        self.assertEqual(h.collector.store.seqs(), list(range(1, 22)))

    def test_paused_before_the_welcome(self) -> None:
        """Paused while the hello waits for its answer: nothing is sent after the welcome until resumed."""
        h = V2Harness(self)
        h.start()
        h.tick()
        link = h.connect()
        link.reporter_transport.producer.pauseProducing()
        link.pump()
        self.assertEqual(link.reporter.mode, "2")
        self.assertEqual(h.collector.store.seqs(), [])
        link.reporter_transport.producer.resumeProducing()
        link.pump()
        self.assertEqual(h.collector.store.seqs(), [1, 2])

    def test_window_bounds_the_unacknowledged(self) -> None:
        """A collector whose disk is slow (no acks): at most --window readings go unacknowledged."""
        h = V2Harness(self, window=3)
        h.collector.store.slow = True
        h.start()
        link = h.connect()
        for _ in range(10):
            h.tick()
            link.pump()
        sent = [v2.parse(f).seq for f in link.collector.frames if f.startswith("reading")]
        self.assertEqual(sent, [1, 2, 3])
        self.assertEqual(h.outbox.journal.last, 11)
        h.collector.store.finish()
        link.pump()
        h.collector.store.finish()
        link.pump()
        h.collector.store.finish()
        link.pump()
        h.collector.store.finish()
        link.pump()
        self.assertEqual(h.collector.store.seqs(), list(range(1, 12)))


class OutboxStartTests(SynchronousTestCase):
    def test_unusable_outbox_stops_the_start_in_one_line(self) -> None:
        """An outbox that cannot be opened: one line naming it, as SystemExit and Exception."""
        from rpisensor.roles.report.outbox import OutboxOpenError

        path = os.path.join(os.path.abspath(self.mktemp()), "no-such-dir", "outbox.sqlite")
        service = OutboxService(Clock(), Journal(path), runner=inline_runner)
        error = self.assertRaises(OutboxOpenError, service.startService)
        self.assertIsInstance(error, SystemExit)
        self.assertIsInstance(error, Exception)
        self.assertEqual(str(error).splitlines(), [str(error)])
        self.assertIn(f"cannot use the outbox {path}", str(error))
        self.assertFalse(service.running)

    def test_not_a_database(self) -> None:
        """A file that is not SQLite: one line saying so."""
        from rpisensor.roles.report.outbox import OutboxOpenError

        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(b"this is not a database, just text " * 100)
        error = self.assertRaises(OutboxOpenError, OutboxService(Clock(), Journal(path), runner=inline_runner).startService)
        self.assertIn("file is not a database", str(error))

    def test_one_reporter_per_outbox(self) -> None:
        """A second reporter on the same outbox file is refused; once the first stops, it may start."""
        from rpisensor.roles.report.outbox import OutboxOpenError

        path = os.path.abspath(self.mktemp() + ".sqlite")
        first = OutboxService(Clock(), Journal(path), runner=inline_runner)
        first.startService()
        second = OutboxService(Clock(), Journal(path), runner=inline_runner)
        error = self.assertRaises(OutboxOpenError, second.startService)
        self.assertIn("another reporter is using it", str(error))
        first.stopService()
        second.startService()
        self.addCleanup(second.stopService)
        self.assertTrue(second.running)


class StatusLineTests(SynchronousTestCase):
    def status(self, h: V2Harness) -> str:
        from rpisensor.roles.report.status import status_line

        return self.successResultOf(Deferred.fromCoroutine(status_line(h.reporter)))

    def test_streaming(self) -> None:
        """Connected in v2, two readings unacknowledged: depth, the oldest one's seq and time, the last ack."""
        h = V2Harness(self)
        h.start()
        link = h.connect()
        link.pump()
        h.tick()
        link.pump()
        h.tick()
        link.pump()
        h.collector.store.slow = True
        h.tick()
        link.pump()
        h.tick()
        link.pump()
        self.assertEqual(
            self.status(h),
            f"stream={h.outbox.journal.stream} device=pi-test connected=yes protocol=2 outbox=2 "
            "oldest_unacked=4 (2026-12-01T19:33:28.123Z) last_ack=3 (2.0 s ago) gaps=none",
        )

    def test_disconnected_with_a_gap(self) -> None:
        """Away long enough for the outbox to overflow: the gap is shown with its reason."""
        h = V2Harness(self)
        h.outbox.stopService()
        h.outbox = OutboxService(h.clock, Journal(None, max_entries=4), runner=inline_runner)
        h.outbox.startService()
        h.reporter = Reporter(h.reader, h.clock, h.outbox, h.stream, 1.0, False, 60.0, Synced())
        h.start()
        for _ in range(9):
            h.tick()
        self.assertEqual(
            self.status(h),
            f"stream={h.outbox.journal.stream} device=pi-test connected=no protocol=none outbox=10 "
            "oldest_unacked=1 (a gap) last_ack=none gaps=1-7:outbox full",
        )

    def test_negotiating_and_plain(self) -> None:
        """While the hello waits: negotiating; after a fallback: protocol=1, and the outbox keeps its readings."""
        h = V2Harness(self)
        h.start()
        protocol = h.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertIn(" connected=yes protocol=negotiating outbox=1 ", self.status(h))
        protocol.dataReceived(ERROR_REPLY)
        self.assertIn(" connected=yes protocol=1 outbox=1 oldest_unacked=1 ", self.status(h))


class StatusListenerTests(SynchronousTestCase):
    def connect(self, h: V2Harness):
        from rpisensor.roles.report.status import StatusFactory

        factory = StatusFactory(h.reporter)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_commands(self) -> None:
        """status, ping and help are answered with one line each; anything else is refused."""
        h = V2Harness(self)
        h.start()
        protocol, transport = self.connect(h)
        protocol.dataReceived(b"status\0ping\0help\0go\0status now\0\0")
        replies = frames(transport)
        self.assertEqual(len(replies), 5)
        self.assertTrue(replies[0].startswith(f"stream={h.outbox.journal.stream} device=pi-test "), replies[0])
        self.assertEqual(replies[1:], [
            "pong",
            "commands: status | ping | help",
            "error: unknown command 'go'; this is a reporter's status listener, it answers: status, ping, help",
            "error: status takes no arguments",
        ])  # fmt: skip

    def test_replies_in_order(self) -> None:
        """A ping after a status still being read is answered after it."""
        h = V2Harness(self)
        h.start()
        slow: Deferred = Deferred()
        h.outbox.gaps = lambda: slow
        protocol, transport = self.connect(h)
        protocol.dataReceived(b"status\0ping\0")
        self.assertEqual(frames(transport), [])
        slow.callback([])
        replies = frames(transport)
        self.assertEqual([r.split(" ")[0].split("=")[0] for r in replies], ["stream", "pong"])

    def test_stale_socket_is_removed(self) -> None:
        """A socket file nobody listens on (a killed reporter's) is removed before listening."""
        import socket as sockets

        from twisted.internet.testing import MemoryReactorClock

        from rpisensor.roles.report.status import StatusListenerService

        directory = tempfile.mkdtemp(prefix="rps-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "r.sock")
        left = sockets.socket(sockets.AF_UNIX)
        left.bind(path)
        left.close()  # the file stays, as after SIGKILL
        h = V2Harness(self)
        from rpisensor.roles.report.status import StatusFactory

        reactor = MemoryReactorClock()
        StatusListenerService(reactor, f"unix:address={path}:lockfile=0", StatusFactory(h.reporter)).privilegedStartService()
        self.assertFalse(os.path.exists(path))
        self.assertEqual(len(reactor.unixServers), 1)

    def test_live_socket_stops_the_start(self) -> None:
        """A socket another reporter answers on: the start stops with one line, the file is kept."""
        import socket as sockets

        from twisted.internet.testing import MemoryReactorClock

        from rpisensor.net.listening import CannotListen
        from rpisensor.roles.report.status import StatusFactory, StatusListenerService

        directory = tempfile.mkdtemp(prefix="rps-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "r.sock")
        live = sockets.socket(sockets.AF_UNIX)
        live.bind(path)
        live.listen(1)
        self.addCleanup(live.close)
        h = V2Harness(self)
        service = StatusListenerService(MemoryReactorClock(), f"unix:address={path}:lockfile=0", StatusFactory(h.reporter))
        error = self.assertRaises(CannotListen, service.privilegedStartService)
        self.assertIn("another reporter answers there", error.code)
        self.assertTrue(os.path.exists(path))


class EdgeFollowingTests(SynchronousTestCase):
    """With --on-change, inputs whose driver reports each change go to the outbox as they change."""

    def test_changes_between_samples_are_recorded_with_their_time_and_no_read(self) -> None:
        from rpisensor.stream.state import InputState
        from tests.test_serve_stream import EdgePins

        clock = Clock()
        clock.advance(START)
        backend = EdgePins(clock)
        reader = InputReader(backend, [DEFAULT_INPUT], inline_runner, clock, wall=clock.seconds)
        reader.setup()
        state = InputState.for_reader(reader, clock)
        state.startService()
        outbox = OutboxService(clock, Journal(None, current_boot="boot"), runner=inline_runner)
        outbox.startService()
        self.addCleanup(outbox.stopService)
        settings = StreamSettings(DEVICE, "auto", 3.0, 10.0, 1000)
        # A sampling interval far longer than the test: only edges can record anything.
        reporter = Reporter(reader, clock, outbox, settings, 3600.0, True, 60.0, Synced(), state=state)
        committed: list[v2.Reading] = []
        reporter.add_listeners(on_reading=committed.append)
        reporter.start()
        clock.advance(0)
        reads = backend.reads
        clock.advance(0.25)
        backend.set_level(DEFAULT_INPUT.pin, False)  # pressed: a pull-up input goes low
        clock.advance(0.01)
        backend.set_level(DEFAULT_INPUT.pin, True)
        clock.advance(0)
        self.assertEqual(
            [(e.seq, e.value, e.ts) for e in committed],
            [
                (1, 0, v2.format_timestamp(START)),
                (2, 1, v2.format_timestamp(START + 0.25)),
                (3, 0, v2.format_timestamp(START + 0.26)),
            ],
        )
        self.assertEqual(backend.reads, reads)
        reporter.stop()
        backend.set_level(DEFAULT_INPUT.pin, False)
        clock.advance(0)
        self.assertEqual(len(committed), 3)  # stopped: nothing more recorded
