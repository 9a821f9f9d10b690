"""
Tests for L{rpisensor.stream.journal}: numbering without holes or repeats,
across reopening, trimming, overflow, a killed process and a power cut.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from hypothesis import given, settings
from hypothesis import strategies as st

from rpisensor.entries import Gap, Reading
from rpisensor.stream.chain import link
from rpisensor.stream.journal import SYNC_EVERY, Journal, JournalError

TS = "2026-12-01T19:33:25.123Z"


def readings(*values: int, sensor: str = "button") -> list[Reading]:
    return [Reading(ts=TS, synced=True, sensor=sensor, value=v, text=f"{sensor} {v}") for v in values]


class JournalTestCase(SynchronousTestCase):
    def journal(self, path=None, boot="boot-1", **options) -> Journal:
        if path is None:
            path = self.path
        journal = Journal(path, current_boot=boot, **options)
        journal.open()
        self.addCleanup(journal.close)
        return journal

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp() + ".sqlite")


class NumberingTests(JournalTestCase):
    def test_new_file_new_stream(self) -> None:
        """A new file is a new stream, numbered from 1."""
        journal = Journal(self.path, current_boot="b")
        opened = journal.open()
        self.addCleanup(journal.close)
        self.assertTrue(opened.created)
        self.assertRegex(opened.stream, r"^[0-9a-f]{16}$")
        entries = journal.append(readings(1, 0, 1))
        self.assertEqual([e.seq for e in entries], [1, 2, 3])
        self.assertEqual({e.stream for e in entries}, {opened.stream})

    def test_reopen_continues(self) -> None:
        """Reopened, the stream and its numbering go on where they were."""
        journal = Journal(self.path, current_boot="b")
        stream = journal.open().stream
        journal.append(readings(1, 0))
        journal.close()
        again = self.journal()
        self.assertEqual(again.stream, stream)
        self.assertEqual([e.seq for e in again.append(readings(1))], [3])
        self.assertEqual([e.value for e in again.after(0, 10)], [1, 0, 1])

    def test_trim_keeps_numbering(self) -> None:
        """Acknowledged entries go, but the newest stays, so numbering survives a restart."""
        journal = Journal(self.path, current_boot="b")
        journal.open()
        journal.append(readings(1, 0, 1))
        self.assertEqual(journal.trim_through(3), 2)
        journal.close()
        again = self.journal()
        self.assertEqual((again.first, again.last), (3, 3))
        self.assertEqual(again.append(readings(0))[0].seq, 4)

    def test_trim_keeps_a_newest_gap(self) -> None:
        """When the newest entry is a gap, trimming keeps it, and with it the numbering."""
        journal = Journal(self.path, current_boot="boot-1")
        journal.open()
        journal._db.close()  # a power cut on an empty journal, then a reboot
        journal._db = None
        again = Journal(self.path, current_boot="boot-2")
        skipped = again.open().skipped
        again.trim_through(skipped.last)
        again.close()
        third = self.journal(boot="boot-2")
        self.assertEqual(third.append(readings(1))[0].seq, skipped.last + 1)

    def test_values_keep_their_type(self) -> None:
        """A digital 1 comes back as the integer 1; a measurement as its float."""
        journal = self.journal()
        journal.append([Reading(ts=TS, synced=False, sensor="t", value=22.5, text="22.5 °C", unit="°C"), *readings(1)])
        first, second = journal.after(0, 10)
        self.assertEqual((first.value, first.unit, first.synced), (22.5, "°C", False))
        self.assertIs(type(second.value), int)

    def test_memory_only(self) -> None:
        """Without a file, each start is a new stream."""
        one, two = Journal(None), Journal(None)
        self.assertNotEqual(one.open().stream, two.open().stream)
        self.assertEqual(one.append(readings(1))[0].seq, 1)


class BoundTests(JournalTestCase):
    def test_overflow_becomes_a_gap(self) -> None:
        """Beyond the bound, the oldest entries become one gap entry, first in the stream."""
        journal = self.journal(max_entries=5)
        fourth = journal.append(readings(*range(8)))[3]
        gap = journal.drop_oldest_over(5, "outbox full")
        # It stands for entries 1..4, so the chain goes on from the fourth's digest.
        self.assertEqual(gap, Gap(stream=journal.stream, first=1, last=4, reason="outbox full", digest=fourth.digest))
        self.assertEqual(journal.rows, 5)
        entries = journal.after(0, 100)
        self.assertEqual(entries[0], gap)
        self.assertEqual([e.seq for e in entries[1:]], [5, 6, 7, 8])

    def test_gaps_merge(self) -> None:
        """A second overflow extends the gap instead of adding another."""
        journal = self.journal()
        journal.append(readings(*range(8)))
        journal.drop_oldest_over(5, "outbox full")
        journal.append(readings(8, 9))
        gap = journal.drop_oldest_over(5, "outbox full")
        self.assertEqual((gap.first, gap.last), (1, 6))
        self.assertEqual(journal.gaps(), [gap])
        self.assertEqual([e.first for e in journal.after(0, 100)], [1, 7, 8, 9, 10])

    def test_after_inside_a_gap(self) -> None:
        """Asking for entries after a seq inside a gap starts with that gap."""
        journal = self.journal()
        journal.append(readings(*range(8)))
        journal.drop_oldest_over(5, "outbox full")
        self.assertIsInstance(journal.after(2, 1)[0], Gap)
        self.assertEqual(journal.after(4, 1)[0].seq, 5)

    def test_after_every_seq_with_gaps(self) -> None:
        """After any seq, with gaps before, between and after: exactly the entries that reach past it."""
        journal = self.journal()
        journal.append(readings(*range(6)))
        journal.drop_oldest_over(4, "outbox full")  # a gap 1..3, then 4, 5, 6
        journal.append(readings(*range(3)))
        journal.append_gap(5, "power cut")  # a gap 10..14, reaching past the last reading
        journal.append(readings(1, 2))
        everything = journal.after(0, 100)
        for seq in range(0, 18):
            for limit in (1, 2, 100):
                with self.subTest(seq=seq, limit=limit):
                    wanted = [e for e in everything if e.last > seq][:limit]
                    self.assertEqual(journal.after(seq, limit), wanted)

    def test_after_and_trim_use_the_primary_key(self) -> None:
        """A replay from far into a long outbox, and a trim, scan nothing before it (no O(n) per fetch)."""
        journal = self.journal()
        journal.append(readings(*range(20)))
        statements: list[str] = []
        journal._db.set_trace_callback(statements.append)
        journal.after(15, 3)
        journal.trim_through(10)
        journal._db.set_trace_callback(None)
        queries = [q for q in statements if q.startswith(("SELECT", "DELETE")) and "entries" in q]
        self.assertGreaterEqual(len(queries), 3)
        for query in queries:
            if "COUNT(*)" in query or "MIN(seq)" in query:
                continue  # the bounds, read after a trim: whole-table aggregates by nature
            plan = " ".join(row[-1] for row in journal._db.execute("EXPLAIN QUERY PLAN " + query))
            self.assertNotIn("SCAN entries", plan, query)

    def test_trim_to(self) -> None:
        """serve's journal keeps only its newest entries."""
        journal = self.journal()
        journal.append(readings(*range(10)))
        self.assertEqual(journal.trim_to(4), 6)
        self.assertEqual([e.seq for e in journal.after(0, 100)], [7, 8, 9, 10])

    def test_latest_per_sensor(self) -> None:
        """The snapshot: each sensor's newest reading."""
        journal = self.journal()
        journal.append(readings(1, 0) + readings(1, sensor="door") + readings(1))
        latest = journal.latest_per_sensor()
        self.assertEqual({name: r.seq for name, r in latest.items()}, {"door": 3, "button": 4})


class DurabilityTests(JournalTestCase):
    def test_batch_mode_syncs_once_per_call(self) -> None:
        """In batch mode commits do not sync; L{Journal.sync} does, once, and only if needed."""
        journal = self.journal()
        journal.append(readings(1))
        journal.append(readings(0))
        self.assertEqual(journal.syncs, 0)
        self.assertTrue(journal.sync())
        self.assertFalse(journal.sync())
        self.assertEqual(journal.syncs, 1)

    def test_sync_forced_by_volume(self) -> None:
        """Reaching L{SYNC_EVERY} unsynced entries forces a sync, bounding what a power cut costs."""
        journal = self.journal()
        journal.append(readings(*([1] * SYNC_EVERY)))
        self.assertEqual(journal.syncs, 1)

    def test_full_mode_syncs_each_commit(self) -> None:
        """C{sync="full"} makes every commit durable."""
        journal = self.journal(sync="full")
        journal.append(readings(1))
        journal.append(readings(0))
        self.assertEqual(journal.syncs, 2)

    def test_power_cut_skips_ahead(self) -> None:
        """
        Opened after an unclean stop on another boot (a power cut), the numbering
        skips behind a gap: seqs that may have reached a receiver are never reused.
        """
        journal = Journal(self.path, current_boot="boot-1")
        journal.open()
        journal.append(readings(1, 0))
        journal._db.close()  # the power goes: no clean close
        journal._db = None
        again = Journal(self.path, current_boot="boot-2")
        opened = again.open()
        self.addCleanup(again.close)
        self.assertEqual((opened.skipped.first, opened.skipped.last), (3, 2 + SYNC_EVERY))
        self.assertEqual(again.after(2, 1), [opened.skipped])
        self.assertIn("lost power", opened.skipped.reason)
        self.assertEqual(again.append(readings(1))[0].seq, 3 + SYNC_EVERY)

    def test_killed_process_same_boot_no_skip(self) -> None:
        """An unclean stop on the same boot (a killed process) loses nothing and skips nothing."""
        journal = Journal(self.path, current_boot="boot-1")
        journal.open()
        journal.append(readings(1, 0))
        journal._db.close()
        journal._db = None
        again = self.journal(boot="boot-1")
        self.assertEqual(again.append(readings(1))[0].seq, 3)

    def test_clean_stop_on_another_boot_no_skip(self) -> None:
        """A clean stop (SIGTERM before a reboot) needs no skip."""
        journal = Journal(self.path, current_boot="boot-1")
        journal.open()
        journal.append(readings(1))
        journal.close()
        self.assertIsNone(Journal(self.path, current_boot="boot-2").open().skipped)

    def test_not_a_database(self) -> None:
        """A file that is not SQLite is refused with a message naming it."""
        with open(self.path, "wb") as f:
            f.write(b"this is not a database" * 100)
        error = self.assertRaises(JournalError, Journal(self.path).open)
        self.assertIn(self.path, str(error))

    def test_sigkill_at_any_moment(self) -> None:
        """
        A process appending as fast as it can, killed with SIGKILL: every entry it
        reported committed is there, in order, the file is intact, and numbering goes on.
        """
        script = textwrap.dedent(f"""
            import sys
            from rpisensor.entries import Reading
            from rpisensor.stream.journal import Journal
            journal = Journal({self.path!r}, current_boot="boot-1")
            journal.open()
            n = 0
            while True:
                batch = [Reading(ts="{TS}", synced=True, sensor="button", value=(n + i) % 2, text="x") for i in range(1 + n % 7)]
                n += len(batch)
                last = journal.append(batch)[-1].seq
                print(last, flush=True)
        """)
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        reported = []
        for line in process.stdout:
            reported.append(int(line))
            if len(reported) == 300:
                break
        process.send_signal(signal.SIGKILL)
        process.wait()
        with sqlite3.connect(self.path) as db:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        journal = self.journal(boot="boot-1")
        seqs = [e.seq for e in journal.after(0, 10**6)]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertGreaterEqual(len(seqs), reported[-1])
        self.assertEqual(journal.append(readings(1))[0].seq, len(seqs) + 1)


class ByteBoundTests(JournalTestCase):
    def test_bound_in_bytes(self) -> None:
        """A bound in bytes becomes a bound in entries from the file's measured size per entry."""
        from rpisensor.stream.journal_service import JournalService
        from rpisensor.testing import inline_runner
        from twisted.internet.task import Clock

        clock = Clock()
        service = JournalService(clock, Journal(self.path, current_boot="b"), outbox=True,
                                 runner=inline_runner, max_bytes=100_000)  # fmt: skip
        service.startService()
        self.addCleanup(service.stopService)
        for value in range(5000):
            service.append(readings(value % 2)[0])
            clock.advance(0)
        journal = service.journal
        self.assertLess(journal.rows, 5000)
        self.assertLessEqual(journal.size_bytes(), 150_000)
        self.assertEqual(journal.gaps()[0].reason, "outbox full")


class FullJournalTests(JournalTestCase):
    """Once full, an append costs the same as in an empty journal: nothing is counted again."""

    def test_no_whole_table_query_after_the_open(self) -> None:
        journal = self.journal(max_entries=50)
        journal.append(readings(*range(200)))
        statements: list[str] = []
        journal._db.set_trace_callback(statements.append)
        for value in range(20):
            journal.append(readings(value % 2))
            journal.trim_to(journal.max_entries)
            journal.drop_oldest_over(40, "outbox full")
            journal.trim_through(journal.last - 5)
        journal._db.set_trace_callback(None)
        whole_table = [q for q in statements if "COUNT(" in q or "MAX(last)" in q or "MAX(seq)" in q]
        self.assertEqual(whole_table, [])
        self.assertEqual(journal.rows, journal._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


# One step on a journal, for the model test below.
_steps = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 30)),
    st.tuples(st.just("gap"), st.integers(1, 5)),
    st.tuples(st.just("drop"), st.integers(2, 40)),
    st.tuples(st.just("trim_through"), st.integers(0, 400)),
    st.tuples(st.just("trim_to"), st.integers(2, 40)),
    st.tuples(st.just("ack"), st.integers(0, 400)),
    st.tuples(st.just("reopen"), st.just(0)),
)


class ModelTests(JournalTestCase):
    """The bounds kept as entries come and go agree with a recount, across trims and restarts."""

    def recount(self, journal: Journal) -> tuple[int, int, int]:
        db = journal._db
        first = db.execute("SELECT MIN(seq) FROM entries").fetchone()[0] or 0
        rows = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        newest = db.execute("SELECT seq, last FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        last = (newest[1] or newest[0]) if newest else journal.last
        return first, last, rows

    @settings(max_examples=60, deadline=None)
    @given(st.lists(_steps, max_size=25))
    def test_bounds_match_a_recount(self, steps) -> None:
        path = self.mktemp() + ".sqlite"
        journal = Journal(path, current_boot="b")
        journal.open()
        taken = 0  # seqs handed out: never reused, never skipped but behind a gap
        try:
            for step, n in steps:
                if step == "append":
                    entries = journal.append(readings(*range(n)))
                    self.assertEqual([e.seq for e in entries], list(range(taken + 1, taken + n + 1)))
                    taken += n
                elif step == "gap":
                    gap = journal.append_gap(n, "lost")
                    self.assertEqual((gap.first, gap.last), (taken + 1, taken + n))
                    taken += n
                elif step == "drop":
                    journal.drop_oldest_over(n, "outbox full")
                    self.assertLessEqual(journal.rows, max(n, 1))
                elif step == "trim_through":
                    journal.trim_through(n)
                elif step == "trim_to":
                    journal.trim_to(n)
                elif step == "ack":
                    journal.acknowledged(n)
                    journal.sync()
                else:
                    acked = journal.acked
                    journal.close()
                    journal = Journal(path, current_boot="b")
                    journal.open()
                    self.assertEqual(journal.acked, acked)
                self.assertEqual((journal.first, journal.last, journal.rows), self.recount(journal))
                self.assertEqual(journal.last, taken)
                # Whatever is held is contiguous and ends at last.
                held = journal.after(max(0, journal.first - 1), 10_000)
                if held:
                    self.assertEqual(held[-1].last, taken)
                    for before, after in zip(held, held[1:]):
                        self.assertEqual(after.first, before.last + 1)
        finally:
            journal.close()


class ChainTests(JournalTestCase):
    def test_each_digest_follows_the_one_before(self) -> None:
        journal = self.journal()
        entries = journal.append(readings(1, 0, 1))
        previous = ""
        for entry in entries:
            self.assertEqual(entry.digest, link(previous, journal.incarnation, entry))
            self.assertEqual(journal.digest_at(entry.seq), entry.digest)
            previous = entry.digest
        self.assertEqual(journal.digest_at(0), "")
        self.assertIsNone(journal.digest_at(99))

    def test_digests_survive_trims_and_restarts(self) -> None:
        journal = Journal(self.path, current_boot="b")
        journal.open()
        entries = journal.append(readings(*range(10)))
        journal.trim_through(6)
        self.assertEqual(journal.digest_at(6), entries[5].digest)  # the last one trimmed: the base
        self.assertIsNone(journal.digest_at(3))  # trimmed and not the base: unknown
        journal.close()
        again = self.journal()
        self.assertEqual(again.digest_at(6), entries[5].digest)
        self.assertEqual(again.digest_at(10), entries[9].digest)
        more = again.append(readings(1))[0]
        self.assertEqual(more.digest, link(entries[9].digest, again.incarnation, more))

    def test_a_copy_goes_apart_from_the_original_at_its_first_own_entry(self) -> None:
        """
        Two copies of one journal file (a cloned or restored SD card) that then
        take the very same readings still differ in their digests: each open is
        a new incarnation.
        """
        original = Journal(self.path, current_boot="b")
        original.open()
        shared = original.append(readings(1, 0))
        original.close()
        copy_path = self.mktemp() + ".sqlite"
        with open(self.path, "rb") as source, open(copy_path, "wb") as target:
            target.write(source.read())
        one, two = self.journal(), self.journal(copy_path)
        self.assertEqual((one.stream, one.secret), (two.stream, two.secret))
        self.assertEqual(one.digest_at(2), two.digest_at(2))
        self.assertEqual(one.digest_at(2), shared[-1].digest)
        [a], [b] = one.append(readings(1)), two.append(readings(1))
        self.assertEqual((a.seq, a.ts, a.value), (b.seq, b.ts, b.value))
        self.assertNotEqual(a.digest, b.digest)


class ForkTests(JournalTestCase):
    def test_fork_carries_what_follows_renumbered(self) -> None:
        journal = self.journal()
        journal.append(readings(*range(5)))
        journal.append_gap(3, "lost")  # 6..8
        journal.append(readings(7, 8))  # 9, 10
        journal.acknowledged(4)
        old_stream, old_secret = journal.stream, journal.secret
        forked = journal.fork(after=4)
        self.assertEqual((forked.old, forked.after, forked.carried), (old_stream, 4, 4))
        self.assertNotIn(journal.stream, (old_stream, forked.old))
        self.assertEqual(forked.new, journal.stream)
        self.assertNotEqual(journal.secret, old_secret)
        entries = journal.after(0, 100)
        self.assertEqual([(e.first, e.last) for e in entries], [(1, 1), (2, 4), (5, 5), (6, 6)])
        self.assertEqual([e.value for e in entries if isinstance(e, Reading)], [4, 7, 8])
        self.assertEqual((journal.first, journal.last, journal.rows, journal.acked), (1, 6, 4, 0))
        previous = ""
        for entry in entries:
            self.assertEqual(entry.digest, link(previous, journal.incarnation, entry))
            previous = entry.digest
        self.assertEqual(journal.append(readings(1))[0].seq, 7)

    def test_fork_clips_a_gap_reaching_across(self) -> None:
        journal = self.journal()
        journal.append(readings(1, 0))
        journal.append_gap(4, "lost")  # 3..6
        journal.append(readings(1))  # 7
        journal.fork(after=4)
        self.assertEqual([(e.first, e.last) for e in journal.after(0, 10)], [(1, 2), (3, 3)])

    def test_fork_survives_a_restart(self) -> None:
        journal = Journal(self.path, current_boot="b")
        journal.open()
        journal.append(readings(*range(4)))
        forked = journal.fork(after=2)
        journal.close()
        again = self.journal()
        self.assertEqual(again.stream, forked.new)
        self.assertEqual((again.first, again.last, again.acked), (1, 2, 0))


class KeepTests(JournalTestCase):
    def test_trim_keeps_what_is_younger_than_kept_since(self) -> None:
        journal = self.journal()
        for minute in range(10):
            journal.append([Reading(ts=f"2026-12-01T10:{minute:02d}:00.000Z", sensor="b", value=1, text="x")])
        journal.trim_through(10, kept_since="2026-12-01T10:06:00.000Z")
        self.assertEqual(journal.first, 7)  # 10:06 and later stay, though acknowledged
        journal.trim_through(10)
        self.assertEqual(journal.first, 10)  # the newest entry always stays
