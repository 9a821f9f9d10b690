"""
The sending and receiving sides of v2 streams, wired to each other through a
link the test controls (frames delivered, lost, or the link cut), with the
real journal in a file, an inline runner and a Clock: every reading arrives
exactly once, in order, whatever happens in between.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.entries import Gap, Reading
from rpisensor.stream.journal import Journal
from rpisensor.stream.link import StreamLink
from rpisensor.stream.journal_service import JournalService
from rpisensor.stream.receiver import Receiver, StreamRegistry, owner_tag
from rpisensor.stream.sender import REPORT, SERVE, Position, Sender
from rpisensor.testing import inline_runner
from rpisensor.wire import v2

TS = "2026-12-01T19:33:25.123Z"


def reading(value: int) -> Reading:
    return Reading(ts=TS, synced=True, sensor="button", value=value, text=f"value {value}")


class MemoryStore:
    """A store that keeps records in a list; each batch durable at once, or failing when the test says."""

    def __init__(self) -> None:
        self.records: list = []
        self.fail_next = False

    def __call__(self, records):
        if self.fail_next:
            self.fail_next = False
            return fail(OSError(28, "No space left on device"))
        self.records.extend(records)
        return succeed(None)

    def readings(self) -> list[int]:
        return [r.seq for r in self.records if isinstance(r, Reading)]


class Pair:
    """A reporter's journal and a collector's store, and one connection between them at a time."""

    def __init__(self, path: str, window: int = 1000, max_entries: int = 1_000_000) -> None:
        self.path = path
        self.clock = Clock()
        self.store = MemoryStore()
        self.registry = StreamRegistry()
        self.window = window
        self.max_entries = max_entries
        self.start_reporter()
        self.sender = self.receiver = None
        self.to_collector: list[str] = []
        self.to_reporter: list[str] = []
        self.closed_with: list[str] = []

    def start_reporter(self, boot: str = "boot") -> None:
        journal = Journal(self.path, max_entries=self.max_entries, current_boot=boot)
        self.outbox = JournalService(self.clock, journal, outbox=True, runner=inline_runner)
        self.outbox.startService()

    def power_cut(self, boot: str) -> None:
        """The Pi loses power: no clean close; it boots again (another boot id)."""
        self.cut()
        journal = self.outbox.journal
        journal._db.close()
        journal._db = None
        self.outbox._ticks.stop()
        self.start_reporter(boot)

    def stop_reporter(self) -> None:
        self.cut()
        self.outbox.stopService()

    def take(self, *values: int) -> None:
        for value in values:
            self.outbox.append(reading(value))
        self.clock.advance(0)

    def connect(self) -> None:
        """A new connection: hello (the stream opened for its owner), welcome, then the sender replays."""
        journal = self.outbox.journal
        opened = Deferred.fromCoroutine(self.registry.open("pi", journal.stream, owner_tag(journal.secret)))
        state = opened.result
        self.receiver_link = StreamLink(self.to_reporter.append, self.clock, None, None, self._problem, self._problem)
        self.receiver = Receiver(
            self.registry, state, self.store, self.receiver_link.send, self._close, self.clock, lambda: TS,
            "192.168.0.17:40000", journal.last,
        )  # fmt: skip
        self.receiver_link.attach(self.receiver)
        self.sender_link = StreamLink(self.to_collector.append, self.clock, None, None, self._problem, self._problem)
        self.sender = Sender(self.outbox, self.sender_link.send_all, REPORT, self._ended, self.window, journal.last)
        self.sender_link.attach(self.sender)
        self.sender.start(Position(state.stored, state.digest))

    def _problem(self, what: str) -> None:
        raise AssertionError(f"a frame the other side cannot use: {what}")

    def _close(self, reason: str) -> None:
        self.closed_with.append(reason)
        self.cut()

    def _ended(self, reason: str) -> None:
        self.closed_with.append(reason)
        self.cut()

    def cut(self) -> None:
        """The link drops: frames in flight are lost both ways."""
        if self.sender is not None:
            self.sender_link.stop()
        if self.receiver is not None:
            self.receiver_link.stop()
        self.sender = self.receiver = None
        self.to_collector.clear()
        self.to_reporter.clear()

    def deliver(self, frames: int | None = None) -> None:
        """Deliver up to C{frames} frames to the collector, and every ack (and match) back."""
        while self.to_collector and (frames is None or frames > 0):
            text = self.to_collector.pop(0)
            self.receiver_link.message(text)
            if frames is not None:
                frames -= 1
            if self.receiver is None:
                return
        self.clock.advance(0)
        while self.to_reporter and self.sender is not None:
            self.sender_link.message(self.to_reporter.pop(0))

    def settle(self) -> None:
        for _ in range(1000):
            if not self.to_collector and not self.to_reporter:
                return
            self.deliver()


class StreamTestCase(SynchronousTestCase):
    def pair(self, **options) -> Pair:
        pair = Pair(os.path.join(self.mktemp() + ".sqlite"), **options)
        self.addCleanup(pair.outbox.stopService)
        return pair


class DeliveryTests(StreamTestCase):
    def test_live_readings(self) -> None:
        """Readings taken while connected are sent as they are committed, and acknowledged."""
        pair = self.pair()
        pair.connect()
        pair.take(1, 0, 1)
        self.assertEqual(len(pair.to_collector), 3)
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2, 3])
        self.assertEqual(pair.sender.acked, 3)
        self.assertEqual(pair.outbox.acked, 3)

    def test_replay_after_outage(self) -> None:
        """Readings taken while disconnected are replayed on the next connection, in order."""
        pair = self.pair()
        pair.take(1, 0, 1, 0)
        pair.connect()
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2, 3, 4])
        self.assertEqual(pair.store.records[0].text, "value 1")

    def test_window(self) -> None:
        """No more than the window goes unacknowledged."""
        pair = self.pair(window=2)
        pair.take(*range(5))
        pair.connect()
        self.assertEqual(len(pair.to_collector), 2)
        pair.deliver()
        self.assertEqual(len(pair.to_collector), 2)
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2, 3, 4, 5])

    def test_read_ahead_while_the_window_is_full(self) -> None:
        """With the window full, the next window's entries are read meanwhile: the ack's answer needs no read."""
        pair = self.pair(window=3)
        pair.take(*range(8))
        reads = []
        after = pair.outbox.after
        pair.outbox.after = lambda seq, limit: (reads.append((seq, limit)), after(seq, limit))[1]
        pair.connect()
        self.assertEqual([v2.parse(t).seq for t in pair.to_collector], [1, 2, 3])
        self.assertEqual(reads, [(0, 3), (3, 3)])  # the window, then the next one while waiting
        pair.deliver()
        self.assertEqual([v2.parse(t).seq for t in pair.to_collector], [4, 5, 6])
        self.assertEqual(reads[2:], [(6, 3)])  # 4..6 came from memory; 7, 8 are read ahead in turn
        pair.settle()
        self.assertEqual(pair.store.readings(), list(range(1, 9)))
        self.assertEqual(len(reads), 3)

    def test_cut_loses_nothing(self) -> None:
        """A cut with frames and acks in flight: the next connection sends what was not stored."""
        pair = self.pair()
        pair.take(*range(6))
        pair.connect()
        pair.deliver(frames=4)  # 1..4 stored; their ack is lost with the cut below
        pair.receiver_link.message(pair.to_collector.pop(0))  # 5 stored, no ack sent yet
        pair.cut()
        pair.connect()
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2, 3, 4, 5, 6])

    def test_pause(self) -> None:
        """While paused (the transport's buffer is full) nothing is sent; resume continues."""
        pair = self.pair()
        pair.connect()
        pair.sender.pause()
        pair.take(1, 0)
        self.assertEqual(pair.to_collector, [])
        pair.sender.resume()
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2])

    def test_reporter_restart(self) -> None:
        """A reporter restarted mid-stream goes on with the same stream and numbering."""
        pair = self.pair()
        pair.take(1, 0)
        pair.connect()
        pair.settle()
        pair.stop_reporter()
        pair.start_reporter()
        pair.take(1)
        pair.connect()
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2, 3])

    def test_outbox_overflow_is_a_gap(self) -> None:
        """Readings the outbox dropped while the collector was away arrive as one gap record."""
        pair = self.pair(max_entries=4)
        pair.take(*range(10))
        pair.connect()
        pair.settle()
        gaps = [r for r in pair.store.records if isinstance(r, Gap)]
        self.assertEqual([(g.first, g.last, g.reason) for g in gaps], [(1, 7, "outbox full")])
        self.assertEqual(pair.store.readings(), [8, 9, 10])

    def test_outbox_full_log_is_rate_limited(self) -> None:
        """A collector away for days cannot fill the Pi's log: a full outbox says so a few times a minute."""
        events: list[dict] = []
        pair = self.pair(max_entries=2)
        pair.outbox.limited_log._logger.observer = events.append
        for value in range(40):
            pair.take(value)
        full = [e for e in events if "outbox is full" in e["log_format"]]
        self.assertEqual(len(full), pair.outbox.limited_log.burst)
        self.assertGreater(pair.outbox.limited_log.suppressed, 0)


class ReceiverTests(StreamTestCase):
    def test_out_of_order_closes(self) -> None:
        """An entry after a hole closes the connection with an error saying where to resume."""
        pair = self.pair()
        pair.take(1, 0, 1)
        pair.connect()
        pair.to_collector.pop(1)
        pair.deliver()
        self.assertEqual(pair.closed_with, ["error: entry 3 out of order, expected 2; reconnect and send from 2"])
        pair.connect()
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2, 3])

    def test_duplicates_are_dropped_and_acknowledged(self) -> None:
        """An entry already stored is not stored again, and is acknowledged."""
        pair = self.pair()
        pair.take(1, 0)
        pair.connect()
        text = pair.to_collector[0]
        pair.settle()
        pair.receiver_link.message(text)
        pair.clock.advance(0)
        self.assertEqual(pair.store.readings(), [1, 2])
        self.assertEqual(pair.to_reporter, [v2.encode(v2.Ack(2))])

    def test_store_failure(self) -> None:
        """A reading the store cannot write is not acknowledged; the sender sends it again."""
        pair = self.pair()
        pair.take(1, 0)
        pair.store.fail_next = True
        pair.connect()
        pair.deliver()
        self.assertTrue(pair.closed_with[0].startswith("error: the collector could not store the reading"))
        pair.connect()
        pair.settle()
        self.assertEqual(pair.store.readings(), [1, 2])

    def test_newer_connection_takes_over(self) -> None:
        """A second connection for the same stream (the first half-open) closes the first."""
        pair = self.pair()
        pair.connect()
        old = pair.receiver
        old.state.session = old  # (as the registry left it)
        pair.connect()
        self.assertTrue(old.closed)
        self.assertIn("error: a newer connection for this stream took over", pair.closed_with)

    def test_wrong_stream(self) -> None:
        """An entry of another stream closes the connection."""
        pair = self.pair()
        pair.connect()
        pair.receiver.receive(v2.Reading(stream="0000000000000000", seq=1, ts=TS, synced=True, sensor="button", value=1, text="x"))
        self.assertIn("on the connection of stream", pair.closed_with[0])

    def test_receiver_ahead(self) -> None:
        """
        A collector with more of the stream than the journal (this journal is an
        older copy): the journal goes on as a new stream carrying its entries,
        and the next connection stores them there.
        """
        pair = self.pair()
        pair.take(1, 0)
        old = pair.outbox.journal.stream
        state = pair.registry.begin("pi", old, 5)
        state.digest = "0123456789abcdef"
        pair.connect()
        pair.settle()
        self.assertTrue(pair.closed_with and "goes on as stream" in pair.closed_with[0])
        self.assertNotEqual(pair.outbox.journal.stream, old)
        pair.connect()
        pair.settle()
        new = [r for r in pair.store.records if r.stream == pair.outbox.journal.stream]
        self.assertEqual([(r.seq, r.text) for r in new], [(1, "value 1"), (2, "value 0")])


class BatchStore:
    """A C{store_batch}: each call's list kept; durable when the test says, or failing."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.waiting: list[Deferred] = []

    def __call__(self, records):
        self.batches.append(list(records))
        d = Deferred()
        self.waiting.append(d)
        return d

    def seqs(self) -> list[list[int]]:
        return [[r.seq for r in batch] for batch in self.batches]


class BatchTests(StreamTestCase):
    """A receiver with a C{store_batch}: what comes between hold and flush is stored as one batch."""

    def receiver(self, store: BatchStore, closed: list, sent: list, stream: str = "s1",
                 registry: StreamRegistry | None = None, peer: str = "192.168.0.17:40000") -> Receiver:
        registry = registry if registry is not None else StreamRegistry()
        state = Deferred.fromCoroutine(registry.open("pi", stream, None)).result
        return Receiver(registry, state, store, sent.append, closed.append, self.clock, lambda: TS, peer)

    def setUp(self) -> None:
        self.clock = Clock()
        self.store, self.closed, self.sent = BatchStore(), [], []

    def entry(self, seq: int, stream: str = "s1") -> v2.Reading:
        return v2.Reading(stream=stream, seq=seq, ts=TS, synced=True, sensor="button", value=seq % 2, text="x")

    def test_held_entries_are_one_batch_one_ack(self) -> None:
        """Entries taken between hold and flush go to the store in one call, acknowledged together."""
        receiver = self.receiver(self.store, self.closed, self.sent)
        receiver.hold()
        for seq in (1, 2, 3):
            receiver.receive(self.entry(seq))
        self.assertEqual(self.store.batches, [])
        receiver.flush()
        receiver.receive(self.entry(4))  # not held: on its own
        self.assertEqual(self.store.seqs(), [[1, 2, 3], [4]])
        self.store.waiting[0].callback(None)
        self.clock.advance(0)
        self.assertEqual(self.sent, [v2.encode(v2.Ack(3))])
        self.store.waiting[1].callback(None)
        self.clock.advance(0)
        self.assertEqual(self.sent[1:], [v2.encode(v2.Ack(4))])

    def test_bad_entry_stores_what_came_before(self) -> None:
        """An entry out of order in a held run: the entries before it are stored, then the close."""
        receiver = self.receiver(self.store, self.closed, self.sent)
        receiver.hold()
        receiver.receive(self.entry(1))
        receiver.receive(self.entry(2))
        receiver.receive(self.entry(5))
        receiver.receive(self.entry(3))  # after the close: ignored
        self.assertEqual(self.store.seqs(), [[1, 2]])
        self.assertEqual(self.closed, ["error: entry 5 out of order, expected 3; reconnect and send from 1"])
        receiver.flush()
        self.assertEqual(self.store.seqs(), [[1, 2]])

    def test_lost_connection_stores_what_was_held(self) -> None:
        """Whole entries received are stored even when the connection goes while they are held."""
        receiver = self.receiver(self.store, self.closed, self.sent)
        receiver.hold()
        receiver.receive(self.entry(1))
        receiver.connection_lost()
        self.assertEqual(self.store.seqs(), [[1]])

    def test_nothing_stored_after_a_failed_write(self) -> None:
        """After a write fails, held entries are dropped (the sender replays them), never stored past the hole."""
        receiver = self.receiver(self.store, self.closed, self.sent)
        receiver.hold()
        receiver.receive(self.entry(1))
        receiver.flush()
        receiver.hold()
        receiver.receive(self.entry(2))
        self.store.waiting[0].errback(OSError(28, "No space left on device"))
        self.assertTrue(self.closed[0].startswith("error: the collector could not store the reading"))
        receiver.connection_lost()
        self.assertEqual(self.store.seqs(), [[1]])
        self.assertEqual(receiver.state.accepted, 0)

    def test_newer_connection_takes_over_what_was_held(self) -> None:
        """A newer connection for the stream: the entries the old one held are stored; the new one acks them."""
        registry = StreamRegistry()
        old_sent, new_sent = [], []
        old = self.receiver(self.store, self.closed, old_sent, registry=registry, peer="a")
        old.hold()
        old.receive(self.entry(1))
        new = self.receiver(self.store, self.closed, new_sent, registry=registry, peer="b")
        self.assertEqual(self.store.seqs(), [[1]])
        self.assertIn("error: a newer connection for this stream took over", self.closed)
        new.receive(self.entry(1))  # a duplicate of what is being stored
        self.store.waiting[0].callback(None)
        self.clock.advance(0)
        self.assertEqual(new_sent, [v2.encode(v2.Ack(1))])


class ExactlyOnceProperty(StreamTestCase):
    @given(st.lists(st.one_of(
        st.tuples(st.just("take"), st.integers(1, 5)),
        st.tuples(st.just("deliver"), st.integers(0, 6)),
        st.just(("cut",)), st.just(("connect",)), st.just(("restart reporter",)),
        st.just(("restart collector",)), st.just(("store fails",)), st.just(("power cut",)),
    ), max_size=40), st.integers(1, 8))  # fmt: skip
    @settings(max_examples=200, deadline=None)
    def test_any_interleaving(self, steps, window) -> None:
        """Any mix of readings, cuts, partial deliveries and restarts stores each reading once, in order."""
        pair = Pair(os.path.join(self.mktemp() + ".sqlite"), window=window)
        skipped = []
        try:
            for number, step in enumerate(steps):
                kind = step[0]
                if kind == "take":
                    pair.take(*range(step[1]))
                elif kind == "deliver" and pair.receiver is not None:
                    pair.deliver(step[1])
                elif kind == "cut":
                    pair.cut()
                elif kind == "connect":
                    pair.cut()
                    pair.connect()
                elif kind == "restart reporter":
                    pair.stop_reporter()
                    pair.start_reporter()
                elif kind == "restart collector":
                    pair.cut()
                    records = [r for r in pair.store.records if r.stream == pair.outbox.journal.stream]
                    pair.registry = StreamRegistry()
                    if records:
                        state = pair.registry.begin("pi", records[-1].stream, records[-1].last)
                        state.digest = records[-1].digest
                elif kind == "store fails":
                    pair.store.fail_next = True
                elif kind == "power cut":
                    pair.power_cut(f"boot-{number}")
                    gap = pair.outbox.opened.skipped
                    skipped.append((gap.first, gap.last))
            pair.store.fail_next = False  # then the faults stop: one more connection delivers the rest
            pair.cut()
            pair.connect()
            pair.settle()
            taken = pair.outbox.journal.last
            skipped_seqs = {seq for first, last in skipped for seq in range(first, last + 1)}
            self.assertEqual(pair.store.readings(), [s for s in range(1, taken + 1) if s not in skipped_seqs])
            gaps = [(r.first, r.last) for r in pair.store.records if isinstance(r, Gap)]
            self.assertEqual(gaps, skipped)
        finally:
            pair.outbox.stopService()


class _Synced:
    def __init__(self, value: bool) -> None:
        self.value = value

    def synced(self) -> bool:
        return self.value


class SamplerTests(StreamTestCase):
    def setUp(self) -> None:
        from rpisensor.sensing.inputs import DEFAULT_INPUT
        from rpisensor.sensing.reader import InputReader
        from rpisensor.testing import simulated_pins

        self.clock = Clock()
        self.clock.advance(1796153605.123)
        self.pins = simulated_pins(clock=self.clock)
        self.reader = InputReader(self.pins, [DEFAULT_INPUT], inline_runner, self.clock, wall=self.clock.seconds)
        self.reader.setup()
        self.path = os.path.join(self.mktemp() + ".sqlite")

    def journal(self) -> JournalService:
        service = JournalService(self.clock, Journal(self.path, current_boot="b"), outbox=True, runner=inline_runner)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def sampler(self, journal, changes_only: bool):
        from rpisensor.stream.sampler import Sampler

        sampler = Sampler(self.reader, journal, self.clock, 0.1, changes_only, _Synced(True))
        sampler.start()
        self.clock.advance(0)
        self.addCleanup(sampler.stop)
        return sampler

    def entries(self, journal) -> list:
        return journal.journal.after(0, 100)

    def test_changes_only(self) -> None:
        """In change mode, only changes become readings: 1 when pressed, with the Pi's time."""
        journal = self.journal()
        self.sampler(journal, changes_only=True)
        for level in (True, True, False, False, True):
            self.pins.set_level(24, level)
            self.clock.advance(0.1)
        entries = self.entries(journal)
        self.assertEqual([(e.value, e.text) for e in entries],
                         [(0, "Button released"), (1, "Button pressed"), (0, "Button released")])  # fmt: skip
        self.assertEqual(entries[0].ts, "2026-12-01T19:33:25.123Z")
        self.assertTrue(entries[0].synced)

    def test_every_sample(self) -> None:
        """In sampling mode, every sample is a reading."""
        journal = self.journal()
        self.sampler(journal, changes_only=False)
        self.clock.advance(0.1)
        self.clock.advance(0.1)
        self.assertEqual([e.value for e in self.entries(journal)], [0, 0, 0])

    def test_restart_records_no_repeat(self) -> None:
        """Restarted in change mode, an unchanged input is not recorded again."""
        journal = self.journal()
        sampler = self.sampler(journal, changes_only=True)
        sampler.stop()
        journal.stopService()
        again = self.journal()
        self.sampler(again, changes_only=True)
        self.clock.advance(0.1)
        self.assertEqual(len(self.entries(again)), 1)


class ServeSenderTests(StreamTestCase):
    """serve's sender: a subscriber resumes from its seq; what the journal forgot is a gap."""

    def journal(self, **options) -> JournalService:
        path = os.path.join(self.mktemp() + ".sqlite")
        service = JournalService(Clock(), Journal(path, current_boot="b", **options), outbox=False,
                                 runner=inline_runner)  # fmt: skip
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def append(self, journal, *values, sensor="button") -> None:
        for value in values:
            journal.append(Reading(ts=TS, synced=True, sensor=sensor, value=value, text=f"{sensor} {value}"))
        journal._reactor.advance(0)

    def sender(self, journal, sent: list, ended: list | None = None, window: int = 1000) -> Sender:
        ended = ended if ended is not None else []
        return Sender(journal, sent.extend, SERVE, ended.append, window)

    def test_resume(self) -> None:
        """A resume gets the entries after its seq, then live ones."""
        journal = self.journal()
        self.append(journal, 1, 0, 1)
        sent = []
        self.sender(journal, sent).start(Position(1))
        self.append(journal, 0)
        self.assertEqual([v2.parse(text).seq for text in sent], [2, 3, 4])

    def test_resume_behind_the_journal(self) -> None:
        """A resume from before what the journal keeps starts with a gap saying so."""
        journal = self.journal(max_entries=3)
        self.append(journal, 1, 0, 1, 0, 1)
        sent = []
        self.sender(journal, sent).start(Position(0))
        frames = [v2.parse(text) for text in sent]
        self.assertEqual((frames[0].first, frames[0].last), (1, 2))
        self.assertIn("no longer holds", frames[0].reason)
        self.assertEqual([f.seq for f in frames[1:]], [3, 4, 5])

    def test_a_subscriber_ahead_makes_a_new_stream_once(self) -> None:
        """
        A subscriber holding more of the stream than the journal (the journal is
        an older copy): the journal goes on as a new stream; but only once per
        start, not on every subscriber's say-so.
        """
        journal = self.journal()
        self.append(journal, 1)
        old = journal.journal.stream
        ended: list[str] = []
        sent: list[str] = []
        sender = self.sender(journal, sent, ended)
        sender.start(Position(5, "0123456789abcdef"))
        self.assertEqual(sent, [v2.encode(v2.Probe(1))])  # does the subscriber hold entry 1 as this journal?
        sender.matched(v2.Match(1))  # no
        self.assertNotEqual(journal.journal.stream, old)
        self.assertIn("goes on as stream", ended[0])
        again: list[str] = []
        self.sender(journal, [], again).start(Position(5, "0123456789abcdef"))
        self.assertIn("already went on as a new stream once", again[0])

    def test_slow_subscriber_behind_trimmed_entries(self) -> None:
        """
        A subscriber that fell behind what the journal keeps gets what it still has in
        memory, then a gap for what is gone, then the rest: never a silent hole.
        """
        journal = self.journal(max_entries=2)
        self.append(journal, 1)
        sent = []
        sender = self.sender(journal, sent, window=1)
        sender.start(Position(0))
        self.append(journal, 0, 1, 0, 1, 0)  # 2 and 3 wait in memory; 4 goes; 5, 6 are kept
        for seq in range(1, 7):
            sender.ack(seq)
        frames = [v2.parse(text) for text in sent]
        self.assertEqual([f.seq if isinstance(f, Reading) else None for f in frames], [1, 2, 3, None, 5, 6])
        self.assertEqual((frames[3].first, frames[3].last), (4, 4))


class HeartbeatTests(SynchronousTestCase):
    def test_beats_when_quiet_and_notices_a_dead_peer(self) -> None:
        """Nothing sent for an interval: a heartbeat; nothing heard for three: the peer is dead, once."""
        from rpisensor.stream.heartbeat import Heartbeat

        clock, sent, dead = Clock(), [], []
        beat = Heartbeat(clock, 10.0, sent.append, dead.append)
        clock.advance(9.9)
        self.assertEqual(sent, [])
        beat.sent()  # a reading went out: no heartbeat needed yet
        clock.advance(9.9)
        self.assertEqual(sent, [])
        clock.advance(0.2)
        self.assertEqual(sent, ["heartbeat"])
        beat.heard()  # at 20 s
        clock.advance(29.9)
        self.assertEqual(dead, [])
        clock.advance(0.2)
        self.assertEqual(dead, [30.0])
        clock.advance(100)
        self.assertEqual(dead, [30.0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """Stopped, it leaves no timer behind."""
        from rpisensor.stream.heartbeat import Heartbeat

        clock = Clock()
        Heartbeat(clock, 1.0, [].append, [].append).stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class SamplerDebounceTests(SynchronousTestCase):
    def test_polled_input_debounced_across_samples(self) -> None:
        """A polled input with debounce=MS: a new level counts once it held that long across samples."""
        from dataclasses import replace

        from rpisensor.sensing.inputs import DEFAULT_INPUT
        from rpisensor.sensing.reader import InputReader
        from rpisensor.stream.sampler import Sampler
        from rpisensor.testing import simulated_pins

        clock = Clock()
        pins = simulated_pins(clock=clock, edges=False)
        reader = InputReader(pins, [replace(DEFAULT_INPUT, debounce=0.25)], inline_runner, clock, wall=clock.seconds)
        reader.setup()
        path = os.path.join(self.mktemp() + ".sqlite")
        journal = JournalService(clock, Journal(path, current_boot="b"), outbox=True, runner=inline_runner)
        journal.startService()
        self.addCleanup(journal.stopService)
        sampler = Sampler(reader, journal, clock, 0.1, True, _Synced(True))
        sampler.start()
        self.addCleanup(sampler.stop)
        clock.advance(0)
        pins.set_level(24, False)  # pressed for 0.1 s only: a bounce
        clock.advance(0.1)
        pins.set_level(24, True)
        clock.advance(0.1)
        pins.set_level(24, False)  # pressed and held
        for _ in range(4):
            clock.advance(0.1)
        values = [e.value for e in journal.journal.after(0, 100)]
        self.assertEqual(values, [0, 1])  # released at start, then the held press, once


class RegistryBoundTests(SynchronousTestCase):
    def test_hellos_for_ever_new_streams_do_not_grow_the_registry(self) -> None:
        """
        A receiver that hears hellos for 20,000 streams (a peer making them up)
        keeps at most C{max_idle} idle ones, plus those a connection has: the
        store remembers the rest. (It used to keep every one: +18 MB.)
        """
        registry = StreamRegistry(max_idle=100)
        live = Deferred.fromCoroutine(registry.open("pi", "live", None)).result
        registry.take(live, object())
        for n in range(20_000):
            Deferred.fromCoroutine(registry.open("pi", f"s{n}", None))
        self.assertLessEqual(len(registry), 101)
        self.assertIs(registry.get("pi", "live"), live)
        self.assertIsNotNone(registry.get("pi", "s19999"))
        self.assertIsNone(registry.get("pi", "s0"))
