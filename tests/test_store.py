"""Tests for rpisensor.store: the file formats, and the batching writer: its start, its stop."""

import errno
import os
import sqlite3
import threading
from contextlib import closing
from dataclasses import asdict, replace
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.store import (
    STOP_TIMEOUT,
    JsonLinesFile,
    Record,
    SQLiteFile,
    StoreClosed,
    StoreOpenError,
    StoreService,
    store_file_for,
)
from rpisensor.store import jsonl
from rpisensor.entries import Reading
from rpisensor.store.record import Standing
from rpisensor.testing import FakeRunner
from tests.full_disk import FullDiskFile
from tests.support import read_jsonl, read_sqlite
from tests.worker_threads import PATIENCE, ThreadedClock

A = Record("2026-11-25T13:00:00.000Z", "192.168.0.17:40000", "Button pressed")
B = Record("2026-11-25T13:00:02.000Z", "192.168.0.17:40000", "Grüße, 23 °C")


class FormatTests(SynchronousTestCase):
    def test_choice_by_suffix(self):
        """.jsonl means JSON Lines; .sqlite and .db mean SQLite; anything else is refused."""
        self.assertIsInstance(store_file_for("r.jsonl"), JsonLinesFile)
        self.assertIsInstance(store_file_for("r.sqlite"), SQLiteFile)
        self.assertIsInstance(store_file_for("R.DB"), SQLiteFile)
        error = self.assertRaises(ValueError, store_file_for, "r.txt")
        self.assertIn(".jsonl", str(error))

    def test_jsonl_appends_across_reopen(self):
        """A JSON Lines store keeps earlier records when reopened, one object a line."""
        path = self.mktemp() + ".jsonl"
        for record in (A, B):
            file = JsonLinesFile(path)
            file.open()
            file.write([record])
            file.close()
        self.assertEqual(read_jsonl(path), [
            {"time": A.time, "peer": A.peer, "message": A.message},
            {"time": B.time, "peer": B.peer, "message": B.message},
        ])  # fmt: skip

    def test_sqlite_appends_across_reopen(self):
        """An SQLite store keeps earlier rows when reopened, and has an index on time."""
        path = self.mktemp() + ".sqlite"
        for record in (A, B):
            file = SQLiteFile(path)
            file.open()
            file.write([record])
            file.close()
        self.assertEqual(read_sqlite(path), [asdict(A), asdict(B)])
        with sqlite3.connect(path) as db:
            indexes = [row[1] for row in db.execute("PRAGMA index_list(readings)")]
        self.assertIn("readings_time", indexes)


class FailOnceFile(JsonLinesFile):
    """A JSON Lines store whose first write fails, as a disk that was full for a moment."""

    failures = 1

    def _append(self, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super()._append(data)


def stream_entry(device: str, seq: int, text: str = "Button pressed") -> Reading:
    return Reading(
        device=device, stream="s1", seq=seq, ts="2026-12-01T00:00:00.000Z", synced=True, sensor="button",
        value=1, text=text, peer="127.0.0.1:1", received="2026-12-01T00:00:00.100Z",
    )  # fmt: skip


class StoreServiceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.runner = FakeRunner()
        self.path = self.mktemp() + ".jsonl"
        self.file = JsonLinesFile(self.path)
        self.store = StoreService(self.clock, self.file, runner=self.runner)
        self.store.startService()

    def full_disk_store(self) -> StoreService:
        store = StoreService(self.clock, FullDiskFile(self.path), runner=self.runner)
        store.startService()
        return store

    def test_one_turn_one_batch(self):
        """Records appended in one reactor turn are written by one job, in order."""
        first, second = self.store.append(A), self.store.append(B)
        self.clock.advance(0)
        self.assertEqual(len(self.runner.jobs), 1)
        self.assertNoResult(first)
        self.runner.run_all()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual([r["message"] for r in read_jsonl(self.path)], [A.message, B.message])

    def test_append_many_is_one_deferred_in_order(self):
        """A list of records goes in the same batch, in order, behind what came before; one Deferred for all."""
        single = self.store.append(A)
        group = self.store.append_many([B, A])
        self.clock.advance(0)
        self.assertEqual(len(self.runner.jobs), 1)
        self.assertNoResult(group)
        self.runner.run_all()
        self.successResultOf(single)
        self.assertIsNone(self.successResultOf(group))
        self.assertEqual([r["message"] for r in read_jsonl(self.path)], [A.message, B.message, A.message])

    def test_append_many_fails_whole(self):
        """A group whose write the disk refuses fails with the OSError; so does one after a stop."""
        store = self.full_disk_store()
        group = store.append_many([A, B])
        self.clock.advance(0)
        self.runner.run_all()
        self.assertEqual(self.failureResultOf(group, OSError).value.errno, errno.ENOSPC)
        self.store.stopService()
        self.runner.run_all()
        self.failureResultOf(self.store.append_many([A]), StoreClosed)

    def test_write_failure_fails_each_append(self):
        """A write the disk refuses fails every record of its batch with the OSError."""
        store = self.full_disk_store()
        first, second = store.append(A), store.append(B)
        self.clock.advance(0)
        self.runner.run_all()
        for d in (first, second):
            error = self.failureResultOf(d, OSError).value
            self.assertEqual(error.errno, errno.ENOSPC)

    def test_what_was_queued_behind_a_failed_write_fails_with_it(self):
        """
        Entries queued while a write fails are not written after it: a stream's later
        entries would land behind a hole, and a JSON Lines file would then skip the
        hole's replay as entries it has.
        """
        stream_entry = lambda seq: Reading(device="pi", stream="s1", seq=seq, ts="2026-12-01T00:00:00.000Z", synced=True, sensor="button", value=1, unit=None, text="Button pressed", peer="127.0.0.1:1", received="2026-12-01T00:00:00.100Z")  # fmt: skip
        file = FailOnceFile(self.path)
        store = StoreService(self.clock, file, runner=self.runner)
        store.startService()
        first = store.append_many([stream_entry(1), stream_entry(2)])
        self.clock.advance(0)
        later = store.append_many([stream_entry(3)])  # arrives while the first write runs
        self.runner.run_all()  # the first write fails
        self.failureResultOf(first, OSError)
        self.failureResultOf(later, OSError)
        self.clock.advance(0)
        self.assertEqual(self.runner.jobs, [])  # nothing else is written
        replay = store.append_many([stream_entry(1), stream_entry(2), stream_entry(3)])
        self.clock.advance(0)
        self.runner.run_all()
        self.successResultOf(replay)
        self.assertEqual([r["seq"] for r in read_jsonl(self.path)], [1, 2, 3])

    def test_one_senders_bad_entry_fails_only_its_own(self):
        """
        A batch holding an entry the file cannot hold (text no UTF-8 can carry) fails
        only that sender's records; the other senders' records in the same batch, and
        those queued behind it, are written. Both formats.
        """
        for suffix in (".jsonl", ".sqlite"):
            with self.subTest(suffix=suffix):
                path = self.mktemp() + suffix
                store = StoreService(self.clock, store_file_for(path), runner=self.runner)
                store.startService()
                good = store.append_many([stream_entry("victim", 1), stream_entry("victim", 2)])
                bad = store.append_many([stream_entry("attacker", 1, text="\ud800")])
                message = store.append(A)
                self.clock.advance(0)
                after_bad = store.append_many([stream_entry("attacker", 2)])  # while the batch is written
                after_good = store.append_many([stream_entry("victim", 3)])
                self.runner.run_all()
                self.successResultOf(good)
                self.successResultOf(message)
                self.failureResultOf(bad, UnicodeEncodeError)
                self.failureResultOf(after_bad, UnicodeEncodeError)  # never behind its own hole
                self.clock.advance(0)
                self.runner.run_all()
                self.successResultOf(after_good)
                store.stopService()
                self.runner.run_all()
                stored = [(r.device, r.seq) for r in stored_stream(path)]
                self.assertEqual(stored, [("victim", 1), ("victim", 2), ("victim", 3)])
                self.assertEqual(stored_messages(path), ["Button pressed", "Button pressed", A.message,
                                                         "Button pressed"])  # fmt: skip

    def test_stop_writes_what_is_queued(self):
        """Stopping writes the records still waiting for the next turn, then closes."""
        d = self.store.append(A)
        self.store.stopService()
        self.runner.run_all()
        self.successResultOf(d)
        self.assertEqual(len(read_jsonl(self.path)), 1)


class StoreStartTests(SynchronousTestCase):
    """The file is opened when the service starts, and a bad one is a one-line error."""

    def test_opened_when_started(self):
        """Making the service does not touch the file; starting it creates it."""
        path = Path(self.mktemp() + ".sqlite")
        store = StoreService(Clock(), SQLiteFile(path), runner=FakeRunner())
        self.assertFalse(path.exists())
        store.startService()
        self.addCleanup(store.file.close)
        self.assertTrue(path.exists())
        self.assertTrue(store.running)

    def test_cannot_open(self):
        """A file that cannot be opened raises StoreOpenError: one line, naming the file."""
        path = Path(self.mktemp()) / "missing-directory" / "readings.jsonl"
        store = StoreService(Clock(), JsonLinesFile(path), runner=FakeRunner())
        error = self.assertRaises(StoreOpenError, store.startService)
        message = str(error)
        self.assertTrue(message.startswith(f"rpisensor: cannot open the store {path}: "), message)
        self.assertIn(f"its directory {path.absolute().parent} does not exist", message)
        self.assertNotIn("\n", message)
        self.assertFalse(store.running)


class StoreStopTests(SynchronousTestCase):
    """Stopping: a Deferred, a deadline for a hung disk, a failed close logged."""

    def setUp(self):
        self.clock = Clock()
        self.runner = FakeRunner()
        self.path = self.mktemp() + ".jsonl"
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, file=None, **options) -> StoreService:
        store = StoreService(self.clock, file or JsonLinesFile(self.path), runner=self.runner, **options)
        store.startService()
        return store

    def errors(self):
        return [e for e in self.events if e["log_level"] == LogLevel.error]

    def test_stop_fires_once_closed(self):
        """stopService returns a Deferred that fires once the writes and the close are done."""
        store = self.start()
        store.append(A)
        stopped = store.stopService()
        self.assertNoResult(stopped)
        self.runner.run_all()
        self.successResultOf(stopped)
        self.assertEqual(len(read_jsonl(self.path)), 1)
        self.assertEqual(self.errors(), [])

    def test_hung_disk_stop_gives_up(self):
        """If the writer thread does not answer within stop_timeout, the stop ends and says so."""
        store = self.start(stop_timeout=4.0)
        store.append(A)
        stopped = store.stopService()
        self.clock.advance(3.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        [error] = self.errors()
        self.assertEqual((error["path"], error["timeout"]), (self.path, 4.0))
        self.assertIn("did not finish writing", error["log_format"])

    def test_default_stop_timeout(self):
        """The deadline is STOP_TIMEOUT unless given."""
        self.assertEqual(StoreService(self.clock, JsonLinesFile(self.path)).stop_timeout, STOP_TIMEOUT)

    def test_failed_close_is_logged(self):
        """A close that fails (a full disk's last flush) is one clear error, not an unhandled one."""
        store = self.start(file=FullDiskFile(self.path))
        store.append(A).addErrback(lambda _: None)  # the write fails: its bytes stay buffered
        stopped = store.stopService()
        self.runner.run_all()
        self.successResultOf(stopped)
        [error] = self.errors()
        self.assertEqual(error["error"], "[Errno 28] No space left on device")
        self.assertIn("Closing the store {path} failed", error["log_format"])


class WriterThreadTests(SynchronousTestCase):
    """The real writer thread: a daemon, and a hung disk does not block the stop."""

    def test_hung_write_does_not_block_the_stop(self):
        """A stop while the writer hangs returns a Deferred at once; it fires at the deadline."""
        clock = ThreadedClock()
        file = JsonLinesFile(self.mktemp() + ".jsonl")
        store = StoreService(clock, file, stop_timeout=2.0)
        hung = HungWrites(file)
        safety = threading.Timer(PATIENCE, hung.gate.set)  # lets the old, blocking stop return
        safety.start()
        self.addCleanup(safety.cancel)
        store.startService()
        self.addCleanup(self.release, store, hung, clock)
        [thread] = [t for t in threading.enumerate() if "rpisensor-store" in t.name]
        self.assertTrue(thread.daemon)
        written = store.append(A)
        clock.advance(0)
        self.assertTrue(hung.entered.wait(PATIENCE))
        stopped = store.stopService()
        self.assertFalse(hung.gate.is_set())  # returned while the write still hangs
        self.assertNoResult(stopped)
        clock.advance(2.0)
        self.successResultOf(stopped)
        self.assertNoResult(written)

    def release(self, store, hung, clock):
        hung.gate.set()
        clock.pump_until(lambda: hung.done)
        store.pool.stop()


class HungWrites:
    """Holds a store file's writes until the test opens the gate."""

    def __init__(self, file) -> None:
        self._write = file.write
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.done = False
        file.write = self.write

    def write(self, records) -> None:
        self.entered.set()
        self.gate.wait()
        self._write(records)
        self.done = True


# -- v2: stream records ---------------------------------------------------------------

from rpisensor.entries import Gap  # noqa: E402
from rpisensor.testing import stored_messages, stored_stream  # noqa: E402

RECEIVED = "2026-12-01T19:33:25.200Z"


def reading(seq: int, stream: str = "8f3a1c2e9b7d4a60", device: str = "pi-kitchen", **fields) -> Reading:
    values = dict(
        ts="2026-12-01T19:33:25.123Z", synced=True, sensor="button", value=seq % 2, unit=None,
        text=f"reading {seq}", peer="192.168.0.17:40000", received=RECEIVED, identity=None,
    )  # fmt: skip
    values.update(fields)
    return Reading(device=device, stream=stream, seq=seq, **values)


def gap(first: int, last: int, stream: str = "8f3a1c2e9b7d4a60", device: str = "pi-kitchen") -> Gap:
    return Gap(device=device, stream=stream, first=first, last=last, reason="outbox full", peer="192.168.0.17:40000", received=RECEIVED, identity="pi-cert")


class SQLiteStreamTests(SynchronousTestCase):
    def open(self, path=None) -> SQLiteFile:
        self.path = path or getattr(self, "path", None) or self.mktemp() + ".sqlite"
        file = SQLiteFile(self.path)
        file.open()
        self.addCleanup(file.close)
        return file

    def rows(self, query: str) -> list[tuple]:
        with closing(sqlite3.connect(self.path)) as db:
            return db.execute(query).fetchall()

    def test_reading_columns(self):
        """A v2 reading has its fields as columns, and the v1 ones filled: time = received, message = text."""
        file = self.open()
        file.write([reading(1, unit="°C", value=21.5, identity="pi-kitchen")])
        [row] = self.rows(
            "SELECT time, peer, message, device, stream, seq, ts, synced, sensor, value, unit, text, "
            "received, identity FROM readings"
        )
        self.assertEqual(row, (
            RECEIVED, "192.168.0.17:40000", "reading 1", "pi-kitchen", "8f3a1c2e9b7d4a60", 1,
            "2026-12-01T19:33:25.123Z", 1, "button", 21.5, "°C", "reading 1", RECEIVED, "pi-kitchen",
        ))  # fmt: skip

    def test_replayed_reading_is_ignored(self):
        """The unique key on (device, stream, seq) keeps one row per reading, however often it comes."""
        file = self.open()
        file.write([reading(1), reading(2)])
        file.write([reading(2), reading(3), reading(1, text="changed")])
        self.assertEqual(self.rows("SELECT seq, text FROM readings ORDER BY id"),
                         [(1, "reading 1"), (2, "reading 2"), (3, "reading 3")])  # fmt: skip
        file.write([reading(1, device="pi-hall")])  # another device's stream may use the same id and seq
        self.assertEqual(len(self.rows("SELECT * FROM readings")), 4)

    def test_gaps_table(self):
        """A gap goes to the gaps table, once."""
        file = self.open()
        file.write([gap(1, 7), reading(8)])
        file.write([gap(1, 7)])
        self.assertEqual(
            self.rows("SELECT device, stream, from_seq, to_seq, reason, peer, received, identity FROM gaps"),
            [("pi-kitchen", "8f3a1c2e9b7d4a60", 1, 7, "outbox full", "192.168.0.17:40000", RECEIVED, "pi-cert")],
        )

    def test_mixed_batch_keeps_arrival_order(self):
        """v1 messages and v2 readings of one batch get ids in the order they came."""
        file = self.open()
        file.write([A, reading(1), reading(2), B, reading(3)])
        self.assertEqual([row[0] for row in self.rows("SELECT message FROM readings ORDER BY id")],
                         [A.message, "reading 1", "reading 2", B.message, "reading 3"])  # fmt: skip

    def test_failed_batch_leaves_nothing(self):
        """A batch that fails half way is rolled back whole: nothing of it is stored."""
        file = self.open()
        self.assertRaises(KeyError, file.write, [reading(1), A, object()])
        self.assertEqual(self.rows("SELECT * FROM readings"), [])
        file.write([reading(1)])
        self.assertEqual(self.rows("SELECT seq FROM readings"), [(1,)])

    def test_high_waters_rebuilt_at_open(self):
        """Opening finds each stream's highest seq, a gap's end included."""
        file = self.open()
        file.write([reading(1), reading(2), reading(1, stream="other"), gap(2, 9, stream="other"), A])
        file.close()
        self.assertEqual(self.open().high_waters, {("pi-kitchen", "8f3a1c2e9b7d4a60"): 2, ("pi-kitchen", "other"): 9})

    def test_durable_commits(self):
        """The file is in WAL mode and every commit is synchronous=FULL (an fsync of the log)."""
        file = self.open()
        self.assertEqual(file._db.execute("PRAGMA synchronous").fetchone(), (2,))
        self.assertEqual(self.rows("PRAGMA journal_mode"), [("wal",)])

    def test_v1_file_is_migrated(self):
        """A store written before v2 gets the new columns and tables; its rows stay as they were."""
        self.path = self.mktemp() + ".sqlite"
        with closing(sqlite3.connect(self.path)) as db, db:
            for statement in V1_SCHEMA:
                db.execute(statement)
            db.execute("INSERT INTO readings (time, peer, message) VALUES (?, ?, ?)", (A.time, A.peer, A.message))
        file = self.open()
        file.write([reading(1), B])
        self.assertEqual(read_sqlite(self.path), [asdict(A), {"time": RECEIVED, "peer": "192.168.0.17:40000",
                                                               "message": "reading 1"}, asdict(B)])  # fmt: skip
        self.assertEqual(self.rows("SELECT seq FROM readings WHERE device IS NOT NULL"), [(1,)])
        file.close()
        self.assertEqual(self.open().high_waters, {("pi-kitchen", "8f3a1c2e9b7d4a60"): 1})

    def test_read_back(self):
        """rpisensor.testing reads the records back: stream records, and every message's text."""
        file = self.open()
        file.write([A, reading(2), gap(1, 1), reading(3)])
        self.assertEqual(stored_stream(self.path), [gap(1, 1), reading(2), reading(3)])
        self.assertEqual(stored_messages(self.path), [A.message, "reading 2", "reading 3"])


#: The table of a store written before v2.
V1_SCHEMA = (
    "CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL,"
    " peer TEXT NOT NULL, message TEXT NOT NULL)",
    "CREATE INDEX readings_time ON readings (time)",
)


class JsonLinesStreamTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp() + ".jsonl"

    def open(self) -> JsonLinesFile:
        file = JsonLinesFile(self.path)
        file.open()
        self.addCleanup(file.close)
        return file

    def test_objects(self):
        """v2 records are objects with a kind, then their fields; v1 messages are as before."""
        file = self.open()
        file.write([reading(1, unit="°C"), gap(2, 4), A])
        self.assertEqual(read_jsonl(self.path), [
            {"kind": "reading", "device": "pi-kitchen", "stream": "8f3a1c2e9b7d4a60", "seq": 1,
             "ts": "2026-12-01T19:33:25.123Z", "synced": True, "sensor": "button", "value": 1, "unit": "°C",
             "text": "reading 1", "peer": "192.168.0.17:40000", "received": RECEIVED, "identity": None,
             "digest": None},
            {"kind": "gap", "device": "pi-kitchen", "stream": "8f3a1c2e9b7d4a60", "from": 2, "to": 4,
             "reason": "outbox full", "peer": "192.168.0.17:40000", "received": RECEIVED, "identity": "pi-cert",
             "digest": None},
            asdict(A),
        ])  # fmt: skip
        self.assertEqual(list(next(iter(read_jsonl(self.path))))[0], "kind")

    def test_each_batch_is_fsynced(self):
        """Every batch is fsynced before write returns: one fsync per batch."""
        file = self.open()
        synced = []
        real = jsonl.os.fsync
        self.patch(jsonl.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
        file.write([reading(1), reading(2), A])
        self.assertEqual(len(synced), 1)
        file.write([reading(2)])  # nothing new: nothing to write or sync
        self.assertEqual(len(synced), 1)

    def test_entries_at_or_below_the_high_water_are_not_written_again(self):
        """A replayed entry is not written twice, in this run or after a reopen (the marks come from a scan)."""
        file = self.open()
        file.write([gap(1, 3), reading(4), reading(4), reading(1, stream="other")])
        file.close()
        file = self.open()
        self.assertEqual(file.high_waters, {("pi-kitchen", "8f3a1c2e9b7d4a60"): 4, ("pi-kitchen", "other"): 1})
        file.write([reading(3), reading(4), reading(5), gap(2, 5), reading(1, stream="other")])
        self.assertEqual([(r["kind"], r.get("seq", r.get("to"))) for r in read_jsonl(self.path)],
                         [("gap", 3), ("reading", 4), ("reading", 1), ("reading", 5)])  # fmt: skip

    def test_torn_last_line_is_cut_at_open(self):
        """A line cut short by a crash is removed at the open, and said once; whole lines stay."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        file = self.open()
        file.write([reading(1), reading(2)])
        file.close()
        torn = b'{"kind": "reading", "device": "pi-kitchen", "stream": "8f3a1c2e9b7d4a60", "seq": 3, "ts'
        with open(self.path, "ab") as f:
            f.write(torn)
        file = self.open()
        self.assertEqual(file.torn, len(torn))
        self.assertEqual(file.high_waters, {("pi-kitchen", "8f3a1c2e9b7d4a60"): 2})
        file.write([reading(3)])
        self.assertEqual([r["seq"] for r in read_jsonl(self.path)], [1, 2, 3])
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("ended in the middle of a line", warning["log_format"])

    def test_unreadable_lines_are_left_and_counted(self):
        """A line with a kind but not a record (edited by hand) is left in place and counted."""
        with open(self.path, "w") as f:
            f.write('{"kind": "reading", "seq": "x"}\nnot json "kind"\n')
        file = self.open()
        self.assertEqual((file.unreadable, file.high_waters), (2, {}))

    def test_failed_write_is_cut_back(self):
        """A write that fails half way leaves no half batch in the file, and the marks unchanged."""
        file = self.open()
        file.write([reading(1)])
        real = jsonl.os.write

        def half_then_full(fd, data):
            real(fd, bytes(data[: len(data) // 2]))
            jsonl.os.write = failing
            return len(data) // 2

        def failing(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(jsonl.os, "write", half_then_full)
        self.assertRaises(OSError, file.write, [reading(2), reading(3)])
        jsonl.os.write = real
        self.assertEqual([r["seq"] for r in read_jsonl(self.path)], [1])
        self.assertEqual(Path(self.path).read_bytes().count(b"\n"), 1)
        file.write([reading(2)])  # sent again after the failure: now written
        self.assertEqual([r["seq"] for r in read_jsonl(self.path)], [1, 2])

    def test_read_back(self):
        """rpisensor.testing reads JSON Lines stream records back, and every message's text."""
        file = self.open()
        file.write([A, gap(1, 1), reading(2)])
        self.assertEqual(stored_stream(self.path), [gap(1, 1), reading(2)])
        self.assertEqual(stored_messages(self.path), [A.message, "reading 2"])


class GroupCommitTests(SynchronousTestCase):
    def test_records_wait_for_the_write_in_flight(self):
        """While a batch is being written, later records wait and then go together, in one batch."""
        clock, runner = Clock(), FakeRunner()
        store = StoreService(clock, JsonLinesFile(self.mktemp() + ".jsonl"), runner=runner)
        store.startService()
        first = store.append(reading(1))
        clock.advance(0)
        later = [store.append(reading(2))]
        clock.advance(0)
        later.append(store.append(reading(3)))
        clock.advance(0)
        self.assertEqual(len(runner.jobs), 1)  # 2 and 3 wait for 1's write
        runner.run_all()
        self.successResultOf(first)
        clock.advance(0)
        [job] = runner.jobs
        self.assertEqual([r.seq for group in job.args[1] for r in group], [2, 3])
        job.run()
        for d in later:
            self.successResultOf(d)

    def test_stop_writes_what_waits_behind_a_write(self):
        """Stopping while a batch is being written writes the waiting records after it, then closes."""
        clock, runner = Clock(), FakeRunner()
        path = self.mktemp() + ".jsonl"
        store = StoreService(clock, JsonLinesFile(path), runner=runner)
        store.startService()
        store.append(reading(1))
        clock.advance(0)
        waiting = store.append(reading(2))
        stopped = store.stopService()
        runner.run_all()
        self.successResultOf(waiting)
        self.successResultOf(stopped)
        self.assertEqual([r["seq"] for r in read_jsonl(path)], [1, 2])

    def test_high_waters(self):
        """The service hands out the file's marks, read when it opened."""
        path = self.mktemp() + ".sqlite"
        file = SQLiteFile(path)
        file.open()
        file.write([reading(5)])
        file.close()
        store = StoreService(Clock(), SQLiteFile(path), runner=FakeRunner())
        store.startService()
        self.addCleanup(store.file.close)
        self.assertEqual(store.high_waters(), {("pi-kitchen", "8f3a1c2e9b7d4a60"): 5})


class StandingMixin:
    """What every store answers about a stream: where it stands, an entry's span and digest, its owner."""

    def make(self):
        raise NotImplementedError

    def reopen(self, file):
        file.close()
        return self.make()

    def test_a_new_stream_stands_nowhere(self):
        file = self.make()
        self.assertEqual(file.standing("pi", "s1"), Standing())
        self.assertIsNone(file.entry("pi", "s1", 1))

    def test_where_a_stream_stands_with_its_digest(self):
        file = self.make()
        file.write([
            reading(1, stream="s1", device="pi", digest="00000000000000a1"),
            reading(2, stream="s1", device="pi", digest="00000000000000a2"),
            replace(gap(3, 5, stream="s1", device="pi"), digest="00000000000000a5"),
        ])  # fmt: skip
        self.assertEqual(file.standing("pi", "s1"), Standing(5, "00000000000000a5", None))
        self.assertEqual(file.entry("pi", "s1", 2), (2, 2, "00000000000000a2"))
        self.assertEqual(file.entry("pi", "s1", 4), (3, 5, "00000000000000a5"))
        self.assertIsNone(file.entry("pi", "s1", 6))
        self.assertEqual(self.reopen(file).standing("pi", "s1"), Standing(5, "00000000000000a5", None))

    def test_the_first_claim_stands(self):
        file = self.make()
        self.assertEqual(file.claim("pi", "s1", "owner-one", RECEIVED), "owner-one")
        self.assertEqual(file.claim("pi", "s1", "owner-two", RECEIVED), "owner-one")
        self.assertEqual(file.claim("pi", "s2", "owner-two", RECEIVED), "owner-two")
        again = self.reopen(file)
        self.assertEqual(again.standing("pi", "s1").owner, "owner-one")
        self.assertEqual(again.claim("pi", "s1", "owner-three", RECEIVED), "owner-one")


class SQLiteStandingTests(StandingMixin, SynchronousTestCase):
    def make(self):
        self.path = getattr(self, "path", None) or self.mktemp() + ".sqlite"
        file = SQLiteFile(self.path)
        file.open()
        self.addCleanup(file.close)
        return file


class JsonLinesStandingTests(StandingMixin, SynchronousTestCase):
    def make(self):
        self.path = getattr(self, "path", None) or self.mktemp() + ".jsonl"
        file = JsonLinesFile(self.path)
        file.open()
        self.addCleanup(file.close)
        return file
