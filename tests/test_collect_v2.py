"""
Tests for C{collect}'s v2 sessions, on StringTransport with a Clock and the
real store files (JSON Lines and SQLite) written by a FakeRunner the test
drives: the handshake with v2 and v1 peers, acks only after the store's
Deferred, replay after a cut at every byte offset, dedupe, gaps, heartbeats,
malformed frames, the certificate's identity.
"""

from __future__ import annotations

from OpenSSL import SSL, crypto
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import READING_LINES, CollectorFactory
from rpisensor.store import StoreService, store_file_for
from rpisensor.entries import Gap, Reading
from rpisensor.testing import FakeRunner, inline_runner, stored_messages, stored_stream
from rpisensor.wire import v2
from tests.certs import make_ca, make_leaf

STREAM = "8f3a1c2e9b7d4a60"
DEVICE = "pi-kitchen"
TS = "2026-12-01T19:33:25.123Z"
RECEIVED = "2025-11-25T13:00:00.250Z"
PEER = "192.168.0.17:40000"


def hello(heartbeat: float | None = 10.0, device: str = DEVICE, last: int | None = None, stream: str = STREAM) -> str:
    return v2.encode(v2.Hello("report", device, stream, heartbeat, last))


def reading(seq: int, stream: str = STREAM) -> str:
    return v2.encode(v2.Reading(stream=stream, seq=seq, ts=TS, synced=True, sensor="button", value=seq % 2, text=f"reading {seq}"))


def frames(*texts: str) -> bytes:
    return b"".join(text.encode() + b"\0" for text in texts)


class WritesByHand(FakeRunner):
    """
    The writer thread for these tests: writes (and the close behind them) wait for the
    test; what a hello asks of the store (where the stream stands, its owner) is answered at once.
    """

    def __call__(self, f, *args):
        if getattr(f, "__name__", "") in ("write_groups", "write", "close"):
            return super().__call__(f, *args)
        return inline_runner(f, *args)


class Collector:
    """A collector on a real store file, with time and the writer thread in the test's hands."""

    def __init__(self, path: str, clock: Clock | None = None, **factory_options) -> None:
        self.path = path
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(1764075600.25)  # 2025-11-25T13:00:00.250Z
        self.runner = WritesByHand()
        self.store = StoreService(self.clock, store_file_for(path), runner=self.runner)
        self.store.startService()
        self.factory = CollectorFactory(self.store, self.clock, ListenSettings(), **factory_options, wall=self.clock.seconds)

    def connect(self, port: int = 40000, transport=None):
        protocol = self.factory.buildProtocol(None)
        transport = transport or StringTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", port))
        protocol.makeConnection(transport)
        return protocol, transport

    def write(self) -> None:
        """Let the reactor turn and the writer thread write everything queued, until nothing is left."""
        for _ in range(100):
            self.clock.advance(0)
            if not self.runner.jobs:
                return
            self.runner.run_all()

    def stop(self) -> None:
        """Close the store file as a stop would (the writer's jobs run)."""
        self.store.stopService()
        self.runner.run_all()


class NoDelayTransport(StringTransport):
    """A TCP transport's setTcpNoDelay, recorded."""

    no_delay = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def sent(transport: StringTransport) -> list[str]:
    """The messages written to C{transport} since the last call; clears it."""
    data = transport.value()
    transport.clear()
    return [m.decode() for m in data.split(b"\0")[:-1]]


def seqs(path: str) -> list[tuple]:
    return [(r.seq,) if isinstance(r, Reading) else (r.first, r.last) for r in stored_stream(path)]


class CollectV2TestCase(SynchronousTestCase):
    suffix = ".sqlite"

    def collector(self, **options) -> Collector:
        path = getattr(self, "path", None)
        if path is None:
            path = self.path = self.mktemp() + self.suffix
        collector = Collector(path, **options)
        self.addCleanup(collector.store.file.close)
        return collector


class HandshakeTests(CollectV2TestCase):
    def test_v2_hello_is_welcomed(self):
        """A hello makes the connection a stream: welcome with acked 0 and the heartbeat it asked for."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(heartbeat=4.0)))
        self.assertEqual(sent(transport), ['welcome {"v":2,"acked":0,"heartbeat":4}'])
        self.assertIsNotNone(protocol.session)

    def test_welcome_says_what_the_store_has(self):
        """After a restart, the welcome's acked is the stream's high-water mark in the store."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1), reading(2)))
        c.write()
        c.stop()
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello()))
        self.assertEqual(sent(transport), ['welcome {"v":2,"acked":2,"heartbeat":10}'])

    def test_stream_sends_at_once(self):
        """A v2 stream's connection turns Nagle's algorithm off: an ack never waits for a delayed ACK."""
        c = self.collector()
        transport = NoDelayTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", 40000))
        protocol, _ = c.connect(transport=transport)
        protocol.dataReceived(frames("Button pressed"))
        self.assertIsNone(transport.no_delay)  # v1: as before
        protocol, _ = c.connect(transport=NoDelayTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", 40001)))
        protocol.dataReceived(frames(hello()))
        self.assertTrue(protocol.transport.no_delay)

    def test_default_heartbeat(self):
        """A hello without a heartbeat gets the default one (a third of 30 s), said in the welcome."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(heartbeat=None)))
        self.assertEqual(sent(transport), ['welcome {"v":2,"acked":0,"heartbeat":10}'])

    def test_v1_reporter_sees_nothing_new(self):
        """A first message that is not a hello keeps v1: stored as a message, nothing sent back."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames("Button pressed", hello(), "Button released"))
        c.write()
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(protocol.session)
        self.assertEqual(stored_messages(c.path), ["Button pressed", hello(), "Button released"])
        self.assertEqual(stored_stream(c.path), [])

    def test_malformed_hello(self):
        """A hello this collector cannot read gets one error line; the connection goes on in v1."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames('hello {"v":3,"role":"report"}', "Button pressed"))
        c.write()
        self.assertEqual(sent(transport), ["error: hello: this peer speaks version 2, not 3"])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(stored_messages(c.path), ["Button pressed"])

    def test_subscriber_hello(self):
        """A subscriber's hello is refused (a refused frame) with a reason that says where to subscribe."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(v2.encode(v2.Hello("subscribe"))))
        [line] = sent(transport)
        self.assertTrue(v2.parse(line).reason.startswith("this is a collector: it takes reporters"), line)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(protocol.session)


class AckTests(CollectV2TestCase):
    def test_ack_only_after_the_store_fires(self):
        """A reading is acknowledged only once the store's write of it is done."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1), reading(2)))
        sent(transport)
        c.clock.advance(0)  # the batch goes to the writer thread, which has not written it yet
        c.clock.advance(1)
        self.assertEqual(len(c.runner.jobs), 1)
        self.assertEqual(sent(transport), [])
        c.runner.run_all()
        self.assertEqual(sent(transport), [])  # (one ack per reactor turn)
        c.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":2}'])
        self.assertEqual(seqs(c.path), [(1,), (2,)])

    def test_duplicates_are_dropped_and_acknowledged(self):
        """Entries the store has are not stored again, and are acknowledged."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1), reading(2)))
        c.write()
        sent(transport)
        protocol.dataReceived(frames(reading(1), reading(2), reading(3)))
        c.write()
        self.assertEqual(sent(transport), ['ack {"seq":2}', 'ack {"seq":3}'])  # the duplicates at once
        protocol.dataReceived(frames(reading(2)))
        c.write()
        self.assertEqual(sent(transport), ['ack {"seq":3}'])
        self.assertEqual(seqs(c.path), [(1,), (2,), (3,)])

    def test_gap_record(self):
        """A gap is stored as a gap record, logged as a warning, and acknowledged to its end."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.collector()
        protocol, transport = c.connect()
        gap = v2.encode(v2.Gap(stream=STREAM, first=1, last=7, reason="outbox full"))
        protocol.dataReceived(frames(hello(), gap, reading(8)))
        c.write()
        self.assertEqual(sent(transport)[-1], 'ack {"seq":8}')
        [record, after] = stored_stream(c.path)
        self.assertEqual(record, Gap(device=DEVICE, stream=STREAM, first=1, last=7, reason="outbox full", peer=PEER, received=RECEIVED, identity=None))
        self.assertEqual(after.seq, 8)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual([(e["first"], e["last"], e["reason"]) for e in warnings], [(1, 7, "outbox full")])

    def test_records_have_their_fields(self):
        """A stored reading has the stream's fields, the peer, and when it was received."""
        c = self.collector()
        protocol, _ = c.connect()
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        self.assertEqual(stored_stream(c.path), [
            Reading(device=DEVICE, stream=STREAM, seq=1, ts=TS, synced=True, sensor="button", value=1, unit=None, text="reading 1", peer=PEER, received=RECEIVED, identity=None)
        ])  # fmt: skip

    def test_out_of_order_closes(self):
        """An entry after a hole: one error line saying where to resume, then the connection closes."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        protocol.dataReceived(frames(reading(3), reading(4)))
        c.write()
        self.assertEqual(sent(transport)[1:], [
            'ack {"seq":1}', "error: entry 3 out of order, expected 2; reconnect and send from 2",
        ])  # fmt: skip
        self.assertTrue(transport.disconnecting)
        self.assertEqual(seqs(c.path), [(1,)])

    def test_snapshot_reading_closes(self):
        """A reading marked as a live view's snapshot is no entry of the stream: refused, not stored."""
        c = self.collector()
        protocol, transport = c.connect()
        snapshot = v2.encode(v2.Reading(stream=STREAM, seq=2, ts=TS, synced=True, sensor="button", value=1,
                                        text="Button pressed", snapshot=True))  # fmt: skip
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        protocol.dataReceived(frames(snapshot))
        c.write()
        self.assertEqual(sent(transport)[1:], [
            'ack {"seq":1}', 'error: entry 2 is marked "snapshot":true, which only a live view\'s first readings '
            "are; a stream carries its entries as they were recorded",
        ])  # fmt: skip
        self.assertTrue(transport.disconnecting)
        self.assertEqual(seqs(c.path), [(1,)])

    def test_store_failure(self):
        """A write that fails is not acknowledged: an error line, a close, and one error logged."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.collector()
        c.store.file.write = lambda records: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        self.assertEqual(sent(transport)[1:], [
            "error: the collector could not store the reading ([Errno 28] No space left on device)"
        ])  # fmt: skip
        self.assertTrue(transport.disconnecting)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("Check the disk", errors[0]["log_format"])

    def test_takeover_acknowledges_what_the_old_connection_was_storing(self):
        """
        A new connection for a stream (the old one half-open) whose replay is all still on its
        way to the disk from the old connection: once it is written, the new one acknowledges it.
        """
        c = self.collector()
        old, old_transport = c.connect(40000)
        old.dataReceived(frames(hello(), reading(1), reading(2), reading(3)))
        c.clock.advance(0)  # 1..3 go to the writer, not yet written
        new, transport = c.connect(40001)
        new.dataReceived(frames(hello()))
        self.assertTrue(old_transport.disconnecting)
        self.assertEqual(sent(transport), ['welcome {"v":2,"acked":0,"heartbeat":10}'])
        new.dataReceived(frames(reading(1), reading(2), reading(3)))
        c.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":0}'])  # duplicates of what is being stored
        c.write()
        self.assertEqual(sent(transport), ['ack {"seq":3}'])
        self.assertEqual(seqs(c.path), [(1,), (2,), (3,)])

    def test_slow_store_pauses_the_reporter(self):
        """Beyond --max-stream-pending entries on their way to the disk, the reporter is not read."""
        c = self.collector(max_stream_pending=2)
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1), reading(2), reading(3)))
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(protocol.busy)
        c.write()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(seqs(c.path), [(1,), (2,), (3,)])
        self.assertFalse(protocol.busy)

    def test_a_replay_logs_a_bounded_number_of_readings(self):
        """With a store, a stream's readings are logged one by one only up to a limit per window; the rest counted."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello()))
        protocol.dataReceived(frames(*[reading(seq) for seq in range(1, 51)]))
        c.write()
        self.assertEqual(sent(transport)[1:], ['ack {"seq":50}'])
        lines = [e["seq"] for e in events if e.get("log_format", "").startswith("Reading {seq}")]
        self.assertEqual(lines, list(range(1, READING_LINES + 1)))
        c.factory._reading_log.flush()
        [summary] = [e for e in events if "more lines like this" in e.get("log_format", "")]
        self.assertEqual(summary["count"], 50 - READING_LINES)

    def test_bound_holds_within_one_segment(self):
        """Entries of one segment are batched, yet the reporter is not read beyond the bound: the rest wait."""
        c = self.collector(max_stream_pending=2)
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello()))
        protocol.dataReceived(frames(*[reading(seq) for seq in range(1, 6)]))
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(protocol.session.receiver.state.accepted, 2)  # 3 to 5 are still in the buffer
        c.write()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(seqs(c.path), [(seq,) for seq in range(1, 6)])
        self.assertEqual(sent(transport)[-1], 'ack {"seq":5}')


class MalformedFrameTests(CollectV2TestCase):
    def test_one_error_line_and_the_connection_stays(self):
        """A malformed frame gets one error line naming the problem; the stream goes on."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        sent(transport)
        protocol.dataReceived(frames('gap {"stream":"8f3a1c2e9b7d4a60","from":5,"to":2,"reason":"x"}'))
        protocol.dataReceived(frames("Button pressed", 'ack {"seq":1}', reading(2)))
        c.write()
        self.assertEqual(sent(transport), [
            "error: gap: 'from' (5) is after 'to' (2)",
            f"error: unknown frame 'Button'; v2 frames are: {', '.join(v2.VERBS)}",
            "error: a sender sends reading, gap, last, probe and heartbeat frames here, not ack",
            'ack {"seq":2}',
        ])  # fmt: skip
        self.assertFalse(transport.disconnecting)
        self.assertEqual(seqs(c.path), [(1,), (2,)])

    def test_a_broken_reading_breaks_the_sequence(self):
        """A reading too broken to use is missing from the sequence: the next one closes the connection."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1), reading(2).replace('"synced":true', '"synced":"yes"')))
        protocol.dataReceived(frames(reading(3)))
        c.write()
        self.assertEqual(sent(transport)[1:], [
            "error: reading: 'synced' must be true or false",
            "error: entry 3 out of order, expected 2; reconnect and send from 1",
        ])  # fmt: skip
        self.assertTrue(transport.disconnecting)

    def test_lines_are_rate_limited(self):
        """A reporter sending bad frames in a loop gets a bounded number of log lines."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), *["nonsense"] * 100))
        self.assertEqual(len(sent(transport)), 101)  # each still gets its error line
        logged = [e for e in events if "cannot use" in e.get("log_format", "")]
        self.assertLessEqual(len(logged), 20)


class HeartbeatTests(CollectV2TestCase):
    def test_heartbeat_when_quiet(self):
        """With nothing else to send for an interval, the collector sends a heartbeat."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(heartbeat=2.0)))
        sent(transport)
        c.clock.advance(1.9)
        protocol.dataReceived(frames("heartbeat"))
        self.assertEqual(sent(transport), [])
        c.clock.advance(0.2)
        self.assertEqual(sent(transport), ["heartbeat"])

    def test_silent_reporter_is_dropped(self):
        """A reporter silent for 3 intervals is aborted; anything it sends keeps it alive."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(heartbeat=2.0)))
        c.clock.advance(5.0)
        protocol.dataReceived(frames("heartbeat"))
        c.clock.advance(5.9)
        self.assertFalse(transport.disconnecting)
        c.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(c.clock.getDelayedCalls(), [])

    def test_no_timer_left_after_the_connection(self):
        """A connection that ends leaves no heartbeat timer behind."""
        c = self.collector()
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(heartbeat=2.0)))
        protocol.connectionLost(Failure(ConnectionLost()))
        c.clock.advance(100)
        self.assertEqual(sent(transport)[1:], [])


class CutAtEveryByteTests(SynchronousTestCase):
    """
    A session's bytes cut at every offset, then a new connection (to the same
    collector, or to a restarted one) on which the reporter replays: every
    reading is stored exactly once.
    """

    def session(self) -> bytes:
        return frames(hello(last=3), reading(1), v2.encode(v2.Gap(stream=STREAM, first=2, last=3, reason="outbox full")), reading(4))

    def check_every_offset(self, suffix: str, restart: bool, replay_all: bool) -> None:
        data = self.session()
        for offset in range(len(data) + 1):
            path = self.mktemp() + suffix
            c = Collector(path)
            protocol, transport = c.connect()
            protocol.dataReceived(data[:offset])
            c.write()
            protocol.connectionLost(Failure(ConnectionLost()))
            if restart:
                c.stop()
                c = Collector(path)
            again, transport = c.connect(40001)
            again.dataReceived(frames(hello(last=4)))
            welcome = v2.parse(sent(transport)[0])
            entries = [reading(1), v2.encode(v2.Gap(stream=STREAM, first=2, last=3, reason="outbox full")), reading(4)]
            ends = [1, 3, 4]
            replay = entries if replay_all else [e for e, end in zip(entries, ends) if end > welcome.acked]
            again.dataReceived(frames(*replay))
            c.write()
            acked = v2.parse(sent(transport)[-1]).seq if replay else welcome.acked
            self.assertEqual(acked, 4, f"cut at byte {offset}")
            self.assertEqual(seqs(path), [(1,), (2, 3), (4,)], f"cut at byte {offset}")
            c.stop()

    def test_jsonl_same_collector(self):
        self.check_every_offset(".jsonl", restart=False, replay_all=False)

    def test_jsonl_restarted_collector_and_a_full_replay(self):
        self.check_every_offset(".jsonl", restart=True, replay_all=True)

    def test_sqlite_same_collector_and_a_full_replay(self):
        self.check_every_offset(".sqlite", restart=False, replay_all=True)

    def test_sqlite_restarted_collector(self):
        self.check_every_offset(".sqlite", restart=True, replay_all=False)


class LoggingTests(CollectV2TestCase):
    def test_one_line_per_stream_on_connect_rate_limited(self):
        """Each (re)connect of a stream logs where it resumes; a flapping link, a bounded number."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.collector()
        for port in range(40000, 40020):
            protocol, _ = c.connect(port)
            protocol.dataReceived(frames(hello(last=5)))
            protocol.connectionLost(Failure(ConnectionLost()))
        resumed = [e for e in events if "resuming after seq" in e.get("log_format", "")]
        self.assertEqual(len(resumed), 5)
        self.assertEqual(resumed[0]["replay"], "; 5 readings to replay")

    def test_replayed_line(self):
        """Once the replay reaches what the reporter held at hello, one line says so."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.collector()
        protocol, _ = c.connect()
        protocol.dataReceived(frames(hello(last=3), reading(1), reading(2), reading(3), reading(4)))
        [line] = [e for e in events if "replayed" in e.get("log_format", "")]
        self.assertEqual((line["count"], line["seq"]), (3, 3))

    def test_readings_do_not_flood_the_log(self):
        """A replay of thousands of readings logs a bounded number of lines about them."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.collector()
        protocol, _ = c.connect()
        protocol.dataReceived(frames(hello(), *[reading(seq) for seq in range(1, 1001)]))
        c.write()
        lines = [e for e in events if e.get("log_format", "").startswith("Reading {seq}")]
        self.assertEqual(len(lines), 20)
        self.assertEqual((lines[0]["seq"], lines[0]["sensor"], lines[0]["text"]), (1, "button", "reading 1"))
        self.assertEqual(len(stored_stream(c.path)), 1000)


class WithoutStoreTests(SynchronousTestCase):
    def test_every_reading_is_logged(self):
        """Without a store the log is all there is: every reading is logged, and acknowledged."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        factory = CollectorFactory(None, clock, ListenSettings(), wall=clock.seconds)
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(frames(hello(), *[reading(seq) for seq in range(1, 51)]))
        clock.advance(0)
        self.assertEqual(sent(transport), ['welcome {"v":2,"acked":0,"heartbeat":10}', 'ack {"seq":50}'])
        lines = [e["seq"] for e in events if e.get("log_format", "").startswith("Reading {seq}")]
        self.assertEqual(lines, list(range(1, 51)))


class EmbeddingTests(CollectV2TestCase):
    def test_on_reading_after_the_store_and_before_the_ack(self):
        """An embedding program's callback gets each reading once stored; its Deferred holds the ack."""
        calls: list[tuple[int, Deferred]] = []

        def on_reading(record):
            d = Deferred()
            calls.append((record.seq, d))
            return d

        c = self.collector(on_reading=on_reading)
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1), reading(2)))
        c.clock.advance(0)
        self.assertEqual(calls, [])  # not before it is stored
        c.write()
        self.assertEqual([seq for seq, _ in calls], [1])  # one at a time, in order
        self.assertEqual(sent(transport)[1:], [])
        calls[0][1].callback(None)
        c.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":1}'])
        calls[1][1].callback(None)
        c.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":2}'])

    def test_batch_hands_over_one_at_a_time(self):
        """A segment's readings, stored as one batch: each is handed over in order; the ack waits for the last."""
        calls: list[tuple[int, Deferred]] = []

        def on_reading(record):
            d = Deferred()
            calls.append((record.seq, d))
            return d

        c = self.collector(on_reading=on_reading)
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello()))
        protocol.dataReceived(frames(reading(1), reading(2), reading(3)))
        c.write()
        self.assertEqual([seq for seq, _ in calls], [1])
        calls[0][1].callback(None)
        calls[1][1].callback(None)
        c.clock.advance(0)
        self.assertEqual([seq for seq, _ in calls], [1, 2, 3])
        self.assertEqual(sent(transport)[1:], [])  # not before all three are handed over
        calls[2][1].callback(None)
        c.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":3}'])

    def test_failing_callback_is_not_acknowledged(self):
        """A callback that fails leaves its reading unacknowledged: the reporter sends it again."""
        failing = [True]

        def on_reading(record):
            if failing[0]:
                return fail(RuntimeError("the program's own database is down"))
            return None

        seen = []
        c = self.collector(on_reading=lambda r: (seen.append(r.seq), on_reading(r))[1])
        protocol, transport = c.connect()
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        self.assertEqual(sent(transport)[1:], [
            "error: the collector could not store the reading (the program's own database is down)"
        ])  # fmt: skip
        failing[0] = False
        again, transport = c.connect(40001)
        again.dataReceived(frames(hello(), reading(1)))
        c.write()
        self.assertEqual(sent(transport), ['welcome {"v":2,"acked":0,"heartbeat":10}', 'ack {"seq":1}'])
        self.assertEqual(seen, [1, 1])


# -- the client certificate's identity --------------------------------------------------------


def _certificate(common_name: str) -> crypto.X509:
    _, ca_key, ca_cert = make_ca("identity test CA")
    leaf = make_leaf(ca_key, ca_cert, common_name, server=False)
    return crypto.load_certificate(crypto.FILETYPE_PEM, leaf.cert_pem)


class _Context:
    def get_verify_mode(self) -> int:
        return SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT


class _Connection:
    def get_context(self) -> _Context:
        return _Context()


@implementer(ISSLTransport)
class MutualTLSTransport(StringTransport):
    """A StringTransport that passes for a TLS connection whose client showed C{certificate}."""

    def __init__(self, certificate) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "192.168.0.17", 40000))
        self.certificate = certificate

    def getHandle(self):
        return _Connection()

    def getPeerCertificate(self):
        return self.certificate


class IdentityTests(CollectV2TestCase):
    suffix = ".jsonl"

    def connect(self, common_name: str):
        c = self.collector()
        protocol, transport = c.connect(transport=MutualTLSTransport(_certificate(common_name)))
        self.assertTrue(protocol.client_certificate_required)
        protocol.handshakeCompleted()
        return c, protocol, transport

    def test_identity_recorded(self):
        """With client certificates required, each record has the certificate's CN as its identity."""
        c, protocol, transport = self.connect(DEVICE)
        protocol.dataReceived(frames(hello(), reading(1), v2.encode(v2.Gap(stream=STREAM, first=2, last=2, reason="outbox full"))))
        c.write()
        self.assertEqual([r.identity for r in stored_stream(c.path)], [DEVICE, DEVICE])

    def test_device_must_match_the_certificate(self):
        """A device claiming another's stream is told so in one line and closed; nothing is stored."""
        c, protocol, transport = self.connect("pi-hall")
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        refusal = v2.Refused("device 'pi-kitchen' does not match your certificate (CN=pi-hall)")
        self.assertEqual(sent(transport), [v2.encode(refusal)])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(stored_messages(c.path), [])

    def test_no_identity_without_client_certificates(self):
        """Without --client-ca there is nothing to check: the identity is null."""
        c = self.collector()
        protocol, _ = c.connect()
        protocol.dataReceived(frames(hello(), reading(1)))
        c.write()
        self.assertEqual([r.identity for r in stored_stream(c.path)], [None])
