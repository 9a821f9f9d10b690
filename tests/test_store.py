"""Tests for rpisensor.store: the file formats, and the batching writer: its start, its stop."""

import errno
import sqlite3
import threading
from dataclasses import asdict
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
    StoreOpenError,
    StoreService,
    store_file_for,
)
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

    def test_write_failure_fails_each_append(self):
        """A write the disk refuses fails every record of its batch with the OSError."""
        store = self.full_disk_store()
        first, second = store.append(A), store.append(B)
        self.clock.advance(0)
        self.runner.run_all()
        for d in (first, second):
            error = self.failureResultOf(d, OSError).value
            self.assertEqual(error.errno, errno.ENOSPC)

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
        self.assertIn("No such file or directory", message)
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
