"""
Tests for C{poll --subscribe}, on StringTransport with a Clock, a fake v2
server's frames written by the test, and the real store files: the
handshake with v2 and v1 servers, where it starts (resume, whole history,
live view), acks only after the store's Deferred, replay after a cut at
every byte offset, dedupe, gaps, heartbeats, embedding.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.roles.poll.subscribing import ClockNotes, SubscribeFactory, describe
from rpisensor.store import StoreService, store_file_for
from rpisensor.entries import Gap, Reading
from rpisensor.testing import FakeRunner, inline_runner, stored_messages, stored_stream
from rpisensor.wire import v2

STREAM = "8f3a1c2e9b7d4a60"
DEVICE = "pi-kitchen"
TS = "2026-12-01T19:33:25.123Z"
SERVER = "192.168.0.17:22000"
HELLO = 'hello {"v":2,"role":"subscribe","heartbeat":10}'


def welcome(first: int = 1, last: int = 0, heartbeat: float | None = None, stream: str = STREAM) -> str:
    return v2.encode(v2.Welcome(device=DEVICE, stream=stream, first=first, last=last, heartbeat=heartbeat))


def reading(seq: int, snapshot: bool = False, sensor: str = "button", digest: str = "") -> str:
    return v2.encode(v2.Reading(stream=STREAM, seq=seq, ts=TS, synced=True, sensor=sensor, value=seq % 2,
                                text=f"reading {seq}", snapshot=snapshot, digest=digest))


def gap(first: int, last: int) -> str:
    return v2.encode(v2.Gap(stream=STREAM, first=first, last=last, reason="the Pi's journal no longer holds these"))


def frames(*texts: str) -> bytes:
    return b"".join(text.encode() + b"\0" for text in texts)


def sent(transport: StringTransport) -> list[str]:
    data = transport.value()
    transport.clear()
    return [m.decode() for m in data.split(b"\0")[:-1]]


class WritesByHand(FakeRunner):
    """The store's thread: writes wait for the test; what a welcome asks of the store is answered at once."""

    def __call__(self, f, *args):
        if getattr(f, "__name__", "") in ("write_groups", "write", "close"):
            return super().__call__(f, *args)
        return inline_runner(f, *args)


class Subscriber:
    """C{poll --subscribe} (with a store at C{path}, or none) with time and its disk in the test's hands."""

    def __init__(self, path: str | None = None, clock: Clock | None = None, **options) -> None:
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(1796153605.5)
        self.runner = WritesByHand()
        self.path = path
        self.store = None
        if path is not None:
            self.store = StoreService(self.clock, store_file_for(path), runner=self.runner)
            self.store.startService()
        options.setdefault("heartbeat", 10.0)
        self.factory = SubscribeFactory(self.clock, store=self.store, **options, wall=self.clock.seconds)

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", 22000))
        protocol.makeConnection(transport)
        return protocol, transport

    def write(self) -> None:
        for _ in range(100):
            self.clock.advance(0)
            if not self.runner.jobs:
                return
            self.runner.run_all()

    def close(self) -> None:
        if self.store is not None:
            self.store.stopService()
            self.runner.run_all()


def seqs(path: str) -> list[tuple]:
    return [(r.seq,) if isinstance(r, Reading) else (r.first, r.last) for r in stored_stream(path)]


class SubscribeTestCase(SynchronousTestCase):
    suffix = ".sqlite"

    def subscriber(self, store: bool = True, **options) -> Subscriber:
        path = None
        if store:
            path = getattr(self, "path", None) or self.mktemp() + self.suffix
            self.path = path
        s = Subscriber(path, **options)
        self.addCleanup(s.close)
        return s


class HandshakeTests(SubscribeTestCase):
    def test_hello_first(self):
        """The client speaks first: a subscriber's hello with its heartbeat interval."""
        s = self.subscriber()
        _, transport = s.connect()
        self.assertEqual(sent(transport), [HELLO])

    def test_new_stream_with_a_store_is_fetched_whole(self):
        """With a store that does not have the stream: subscribe after 0, the journal's whole history."""
        s = self.subscriber()
        protocol, transport = s.connect()
        sent(transport)
        protocol.dataReceived(frames(welcome(first=1, last=2)))
        self.assertEqual(sent(transport), ['subscribe {"after":0}'])
        protocol.dataReceived(frames(reading(1), reading(2)))
        s.write()
        self.assertEqual(sent(transport), ['ack {"seq":2}'])
        self.assertEqual(seqs(s.path), [(1,), (2,)])

    def test_resume_after_the_store_high_water(self):
        """A stream the store has: subscribe after its high-water mark (also after a restart)."""
        s = self.subscriber()
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome(last=3), reading(1), reading(2), reading(3)))
        s.write()
        s.close()
        s = self.subscriber()
        protocol, transport = s.connect()
        sent(transport)
        protocol.dataReceived(frames(welcome(last=5)))
        self.assertEqual(sent(transport), ['subscribe {"after":3}'])
        protocol.dataReceived(frames(reading(4), reading(5)))
        s.write()
        self.assertEqual(seqs(s.path), [(1,), (2,), (3,), (4,), (5,)])

    def test_another_stream_of_the_device_starts_from_its_start(self):
        """A new stream (the Pi's journal was replaced) is fetched from 0, whatever the old one had."""
        s = self.subscriber()
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome(last=3), reading(1), reading(2), reading(3)))
        s.write()
        again, transport = s.connect()
        sent(transport)
        again.dataReceived(frames(welcome(last=3, stream="0123456789abcdef")))
        self.assertEqual(sent(transport), ['subscribe {"after":0}'])

    def test_store_ahead_of_the_journal(self):
        """
        A store with more of the stream than the Pi's journal: the subscriber asks
        from where it stands, with its digest; the Pi's side tells the copies
        apart (see tests/test_stream.py) and goes on as a new stream.
        """
        s = self.subscriber()
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome(last=3), reading(1), reading(2, digest="0123456789abcdef")))
        s.write()
        again, transport = s.connect()
        sent(transport)
        again.dataReceived(frames(welcome(last=1)))
        self.assertEqual(sent(transport), ['subscribe {"after":2,"d":"0123456789abcdef"}'])
        again.dataReceived(frames('probe {"seq":1}'))
        s.write()
        self.assertEqual(sent(transport), ['match {"seq":1,"to":1}'])

    def test_live_view_without_a_store(self):
        """Without a store: subscribe {}, snapshot readings shown and not acknowledged, then changes."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        s = self.subscriber(store=False)
        protocol, transport = s.connect()
        sent(transport)
        protocol.dataReceived(frames(welcome(last=7)))
        self.assertEqual(sent(transport), ["subscribe {}"])
        protocol.dataReceived(frames(reading(5, snapshot=True, sensor="door"), reading(7, snapshot=True)))
        s.clock.advance(0)
        self.assertEqual(sent(transport), [])
        protocol.dataReceived(frames(reading(8)))
        s.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":8}'])
        lines = [e["line"] for e in events if e.get("log_format") == "{line}"]
        self.assertEqual(lines, [
            "door: reading 5 (seq 5, 19:33:25.123, state when subscribed)",
            "button: reading 7 (seq 7, 19:33:25.123, state when subscribed)",
            "button: reading 8 (seq 8, 19:33:25.123)",
        ])  # fmt: skip

    def test_live_view_resumes_after_a_reconnect(self):
        """A live view that reconnects asks for what it missed, after the last reading it showed."""
        s = self.subscriber(store=False)
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome(last=7), reading(7, snapshot=True), reading(8), reading(9)))
        protocol.connectionLost(Failure(ConnectionLost()))
        again, transport = s.connect()
        sent(transport)
        again.dataReceived(frames(welcome(last=12)))
        self.assertEqual(sent(transport), ['subscribe {"after":9}'])

    def test_v1_server_error(self):
        """An older serve answers hello with an error: poll it with go; replies stored as plain messages."""
        s = self.subscriber()
        protocol, transport = s.connect()
        sent(transport)
        protocol.dataReceived(frames("error: unknown command 'hello'; send 'help' for the list"))
        self.assertEqual(sent(transport), ["go"])
        protocol.dataReceived(frames("Button pressed"))
        s.write()
        s.clock.advance(2.0)
        self.assertEqual(sent(transport), ["go"])
        self.assertEqual(stored_messages(s.path), ["Button pressed"])
        self.assertIsNone(protocol.parting_error)

    def test_silent_v1_server(self):
        """A server that ignores hello (the tutorial's DataServer1) is polled after --hello-timeout."""
        s = self.subscriber(hello_timeout=3.0)
        protocol, transport = s.connect()
        sent(transport)
        s.clock.advance(2.9)
        self.assertEqual(sent(transport), [])
        s.clock.advance(0.2)
        self.assertEqual(sent(transport), ["go"])
        self.assertEqual(protocol.mode, "v1")

    def test_welcome_after_the_timeout_is_a_reply(self):
        """Once polling, a late message is a reply, not a welcome: no stream is started."""
        s = self.subscriber(store=False)
        protocol, transport = s.connect()
        s.clock.advance(3.0)
        protocol.dataReceived(frames(welcome()))
        self.assertEqual(protocol.mode, "v1")
        self.assertIsNone(protocol.link)

    def test_unusable_welcome(self):
        """A welcome without a device or stream cannot be followed: the server is polled instead."""
        s = self.subscriber(store=False)
        protocol, transport = s.connect()
        sent(transport)
        protocol.dataReceived(frames('welcome {"v":2,"acked":3}'))
        self.assertEqual(sent(transport), ["go"])


class StreamTests(SubscribeTestCase):
    def start(self, s: Subscriber, last: int = 0):
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome(last=last)))
        sent(transport)
        return protocol, transport

    def test_ack_only_after_the_store_fires(self):
        """A reading is acknowledged only once the store wrote it."""
        s = self.subscriber()
        protocol, transport = self.start(s)
        protocol.dataReceived(frames(reading(1)))
        s.clock.advance(0)
        s.clock.advance(1)
        self.assertEqual(sent(transport), [])
        s.runner.run_all()
        s.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":1}'])

    def test_duplicates_dropped_and_acknowledged(self):
        """A reading the store has is not stored twice, and is acknowledged."""
        s = self.subscriber()
        protocol, transport = self.start(s)
        protocol.dataReceived(frames(reading(1), reading(2)))
        s.write()
        sent(transport)
        protocol.dataReceived(frames(reading(2)))
        s.write()
        self.assertEqual(sent(transport), ['ack {"seq":2}'])
        self.assertEqual(seqs(s.path), [(1,), (2,)])

    def test_gap(self):
        """Entries the Pi's journal no longer holds arrive as a gap record."""
        s = self.subscriber()
        protocol, transport = self.start(s, last=9)
        protocol.dataReceived(frames(gap(1, 7), reading(8), reading(9)))
        s.write()
        self.assertEqual(seqs(s.path), [(1, 7), (8,), (9,)])
        [record] = [r for r in stored_stream(s.path) if isinstance(r, Gap)]
        self.assertEqual((record.device, record.peer), (DEVICE, SERVER))

    def test_out_of_order_closes_without_an_error_line(self):
        """A reading after a hole closes the connection (to resume), and tells the server nothing."""
        s = self.subscriber()
        protocol, transport = self.start(s)
        protocol.dataReceived(frames(reading(2)))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(sent(transport), [])

    def test_malformed_frames_are_logged_not_answered(self):
        """A frame the subscriber cannot read is logged; answering could start a loop of errors."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        s = self.subscriber()
        protocol, transport = self.start(s)
        protocol.dataReceived(frames("reading {", "error: ack 5 is beyond the last reading sent (3)", reading(1)))
        s.write()
        self.assertEqual(sent(transport), ['ack {"seq":1}'])
        self.assertFalse(transport.disconnecting)
        warned = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 2)

    def test_store_failure_backs_off(self):
        """A store that fails: nothing acknowledged, the connection closed, and the next try later."""
        s = self.subscriber()
        s.store.file.write = lambda records: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        protocol, transport = self.start(s)
        protocol.dataReceived(frames(reading(1)))
        s.write()
        self.assertEqual(sent(transport), [])
        self.assertTrue(transport.disconnecting)
        self.assertIn("could not store", protocol.parting_error)

    def test_readings_are_logged_rate_limited_with_a_store(self):
        """With a store, a replay of thousands of readings logs a bounded number of lines."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        s = self.subscriber()
        protocol, transport = self.start(s, last=500)
        protocol.dataReceived(frames(*[reading(seq) for seq in range(1, 501)]))
        s.write()
        lines = [e for e in events if e.get("log_format") == "Stored {line}"]
        self.assertEqual(len(lines), 20)
        self.assertEqual(len(stored_stream(s.path)), 500)


class HeartbeatTests(SubscribeTestCase):
    def test_heartbeats_both_ways(self):
        """After the welcome, a heartbeat when quiet; a server silent for 3 intervals is dropped."""
        s = self.subscriber(store=False)
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome(heartbeat=2.0)))
        sent(transport)
        s.clock.advance(2.0)
        self.assertEqual(sent(transport), ["heartbeat"])
        protocol.dataReceived(frames("heartbeat"))
        s.clock.advance(5.9)
        self.assertFalse(transport.disconnecting)
        s.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(s.clock.getDelayedCalls(), [])

    def test_our_interval_when_the_welcome_names_none(self):
        """A welcome without a heartbeat: the interval from our hello."""
        s = self.subscriber(store=False, heartbeat=4.0)
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome()))
        self.assertEqual(protocol.link.heartbeat.interval, 4.0)

    def test_no_heartbeat_when_off(self):
        """With the dead-peer timeout off (0), hello announces no heartbeat and none is kept."""
        s = self.subscriber(store=False, heartbeat=None)
        protocol, transport = s.connect()
        self.assertEqual(sent(transport), ['hello {"v":2,"role":"subscribe"}'])
        protocol.dataReceived(frames(welcome()))
        self.assertIsNone(protocol.link.heartbeat)


class CutAtEveryByteTests(SynchronousTestCase):
    """
    The server's bytes cut at every offset, then a new connection (of the same
    subscriber, or a restarted one) where the server sends what the subscribe
    asks for: every entry is stored exactly once.
    """

    ENTRIES = [(reading(1), 1), (gap(2, 3), 3), (reading(4), 4)]

    def check_every_offset(self, suffix: str, restart: bool) -> None:
        data = frames(welcome(last=4), *[text for text, _ in self.ENTRIES])
        for offset in range(len(data) + 1):
            path = self.mktemp() + suffix
            s = Subscriber(path)
            protocol, transport = s.connect()
            protocol.dataReceived(data[:offset])
            s.write()
            protocol.connectionLost(Failure(ConnectionLost()))
            if restart:
                s.close()
                s = Subscriber(path)
            again, transport = s.connect()
            sent(transport)
            again.dataReceived(frames(welcome(last=4)))
            after = v2.parse(sent(transport)[0]).after
            again.dataReceived(frames(*[text for text, end in self.ENTRIES if end > after]))
            s.write()
            self.assertEqual(seqs(path), [(1,), (2, 3), (4,)], f"cut at byte {offset}")
            if after < 4:
                self.assertEqual(sent(transport)[-1], 'ack {"seq":4}', f"cut at byte {offset}")
            s.close()

    def test_jsonl(self):
        self.check_every_offset(".jsonl", restart=False)

    def test_jsonl_restarted(self):
        self.check_every_offset(".jsonl", restart=True)

    def test_sqlite(self):
        self.check_every_offset(".sqlite", restart=False)

    def test_sqlite_restarted(self):
        self.check_every_offset(".sqlite", restart=True)


class EmbeddingTests(SubscribeTestCase):
    def test_on_reading(self):
        """Each reading goes to on_reading, snapshot ones first and flagged; its Deferred holds the ack."""
        got: list[Reading] = []
        pending: list[Deferred] = []

        def on_reading(record: Reading):
            got.append(record)
            if not record.snapshot:
                pending.append(Deferred())
                return pending[-1]
            return None

        s = self.subscriber(store=False, on_reading=on_reading)
        protocol, transport = s.connect()
        protocol.dataReceived(frames(welcome(last=7), reading(7, snapshot=True), reading(8)))
        sent(transport)
        self.assertEqual([(r.seq, r.snapshot, r.device, r.peer) for r in got],
                         [(7, True, DEVICE, SERVER), (8, False, DEVICE, SERVER)])  # fmt: skip
        s.clock.advance(0)
        self.assertEqual(sent(transport), [])
        pending[0].callback(None)
        s.clock.advance(0)
        self.assertEqual(sent(transport), ['ack {"seq":8}'])


class DescribeTests(SynchronousTestCase):
    def test_unsynced_clock_is_said_once(self):
        """Readings taken before the Pi's clock was synchronised: one line says so, not every line."""

        def reading(synced: bool) -> Reading:
            return Reading(device=DEVICE, stream=STREAM, seq=3, ts=TS, synced=synced, sensor="door", value=1,
                           unit=None, text="Door open", peer=SERVER, received=TS)  # fmt: skip

        self.assertEqual(describe(reading(False)), "door: Door open (seq 3, 19:33:25.123)")
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        notes = ClockNotes()
        for synced in (False, False, False, True, True, False):
            notes.note(reading(synced))
        lines = [formatEvent(e) for e in events if "clock" in str(e.get("log_format", ""))]
        self.assertEqual(lines, [
            f"The clock of {DEVICE} is not synchronised (NTP): the times of its readings may be off until it is.",
            f"The clock of {DEVICE} is synchronised now.",
            f"The clock of {DEVICE} is not synchronised (NTP): the times of its readings may be off until it is.",
        ])  # fmt: skip
