"""Tests for rpisensor.store: the file formats and the batching writer."""

import sqlite3
from dataclasses import asdict

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.store import JsonLinesFile, Record, SQLiteFile, StoreService, store_file_for
from rpisensor.testing import FakeRunner
from tests.support import read_jsonl, read_sqlite

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
        self.file.open()
        self.store = StoreService(self.clock, self.file, runner=self.runner)
        self.store.startService()

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
        """A failed write fails every record of its batch, so the collector can say so."""
        d = self.store.append(A)
        self.clock.advance(0)
        self.file.close()  # the write will fail
        self.runner.run_all()
        self.failureResultOf(d)

    def test_stop_writes_what_is_queued(self):
        """Stopping writes the records still waiting for the next turn, then closes."""
        d = self.store.append(A)
        self.store.stopService()
        self.runner.run_all()
        self.successResultOf(d)
        self.assertEqual(len(read_jsonl(self.path)), 1)
