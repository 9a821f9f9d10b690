"""
Tests for L{rpisensor.stream.journal_service.JournalService}: a disk that refuses writes
(full) loses nothing it can keep and says what it could not; a stop commits
everything appended before it.
"""

from __future__ import annotations

import sqlite3

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.entries import Gap, Reading
from rpisensor.stream.journal import Journal
from rpisensor.stream.journal_service import JournalService, ReadingLost
from rpisensor.testing import FakeRunner, inline_runner


def reading(n: int) -> Reading:
    return Reading(ts=f"2026-12-01T10:00:{n % 60:02d}.000Z", synced=True, sensor="button", value=n % 2, text=f"r{n}")


class FullDisk:
    """An inline runner whose appends fail while C{full} (the disk of the journal is full)."""

    def __init__(self) -> None:
        self.full = False

    def __call__(self, f, *args):
        if self.full and getattr(f, "__name__", "") == "_append_in_thread":
            return inline_runner(_refuse)
        return inline_runner(f, *args)


def _refuse():
    raise sqlite3.OperationalError("database or disk is full")


class DiskFullTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.disk = FullDisk()
        self.path = self.mktemp() + ".sqlite"
        self.errors: list[dict] = []

        def observe(event):
            if event.get("log_level") == LogLevel.error:
                self.errors.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def service(self, **options) -> JournalService:
        service = JournalService(self.clock, Journal(self.path, current_boot="b"), outbox=True, runner=self.disk,
                                 **options)  # fmt: skip
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def append(self, service: JournalService, numbers) -> list:
        outcomes = []
        for n in numbers:
            service.append(reading(n)).addBoth(outcomes.append)
            self.clock.advance(0)
        return outcomes

    def test_readings_wait_for_the_disk_in_order(self) -> None:
        service = self.service()
        self.append(service, range(3))
        self.disk.full = True
        waiting = self.append(service, range(3, 10))
        self.assertEqual(waiting, [])  # neither written nor lost: held
        self.assertEqual(service.journal.last, 3)
        self.disk.full = False
        self.clock.advance(1)  # the tick tries the disk again
        self.assertEqual([e.seq for e in waiting], list(range(4, 11)))
        entries = service.journal.after(0, 100)
        self.assertEqual([e.text for e in entries], [f"r{n}" for n in range(10)])

    def test_overflow_becomes_a_gap_naming_the_full_disk(self) -> None:
        service = self.service(max_unwritten=5)
        self.append(service, range(2))
        self.disk.full = True
        outcomes = self.append(service, range(2, 14))
        self.assertEqual(len(outcomes), 7)  # the 7 oldest of 12 waiting were dropped
        for outcome in outcomes:
            outcome.trap(ReadingLost)
        self.disk.full = False
        self.clock.advance(1)
        entries = service.journal.after(0, 100)
        gap = entries[2]
        self.assertIsInstance(gap, Gap)
        self.assertEqual((gap.first, gap.last), (3, 9))
        self.assertIn("disk was full", gap.reason)
        self.assertIn("7 readings", gap.reason)
        self.assertEqual([e.text for e in entries[3:]], [f"r{n}" for n in range(9, 14)])
        self.assertEqual([e.seq for e in entries[3:]], list(range(10, 15)))

    def test_the_failure_is_logged_a_few_times_not_once_per_reading(self) -> None:
        service = self.service(max_unwritten=10_000)
        self.disk.full = True
        for second in range(30):
            self.append(service, range(10 * second, 10 * second + 10))
            self.clock.advance(1)
        self.assertLessEqual(len(self.errors), 5)
        self.assertGreater(len(self.errors), 0)

    def test_a_stop_writes_what_waits(self) -> None:
        service = self.service()
        self.append(service, range(2))
        for n in range(2, 5):
            service.append(reading(n))  # no reactor turn: still queued
        service.stopService()
        again = Journal(self.path, current_boot="b")
        again.open()
        self.addCleanup(again.close)
        self.assertEqual([e.text for e in again.after(0, 100)], [f"r{n}" for n in range(5)])


class StopTests(SynchronousTestCase):
    def test_a_stop_waits_for_the_write_in_flight_and_what_follows(self) -> None:
        """What was appended while a write was in the journal's thread is written before the close."""
        clock, runner = Clock(), FakeRunner()
        path = self.mktemp() + ".sqlite"
        service = JournalService(clock, Journal(path, current_boot="b"), outbox=True, runner=runner)
        service.startService()
        service.append(reading(0))
        clock.advance(0)
        self.assertEqual(len(runner.jobs), 1)  # the first write, in flight
        service.append(reading(1))
        service.append(reading(2))
        stopped = service.stopService()
        while runner.jobs:
            runner.run_all()
        self.successResultOf(stopped)
        again = Journal(path, current_boot="b")
        again.open()
        self.addCleanup(again.close)
        self.assertEqual([e.text for e in again.after(0, 100)], ["r0", "r1", "r2"])

    def test_an_append_after_the_stop_fails_without_blaming_the_disk(self) -> None:
        from rpisensor.stream.journal_service import JournalClosed

        clock = Clock()
        service = JournalService(clock, Journal(None), outbox=True, runner=inline_runner)
        service.startService()
        service.stopService()
        self.failureResultOf(service.append(reading(0)), JournalClosed)


class ChangeRecordingTests(SynchronousTestCase):
    """A change the journal lost is recorded again, not taken as unchanged for ever."""

    def test_a_lost_change_is_forgotten(self) -> None:
        from rpisensor.stream.sampler import record

        clock, disk = Clock(), FullDisk()
        service = JournalService(clock, Journal(None), outbox=True, runner=disk, max_unwritten=1)
        service.startService()
        self.addCleanup(service.stopService)
        recorded: dict = {}
        disk.full = True
        record(service, recorded, reading(1))
        clock.advance(0)
        self.assertEqual(recorded, {"button": 1})  # waiting for the disk: still counts as recorded
        record(service, recorded, reading(2))  # (value 0) the first one is dropped now
        clock.advance(0)
        self.assertEqual(recorded, {"button": 0})
        record(service, recorded, reading(4))  # (value 0) pushes out reading 2: its value is forgotten
        record(service, recorded, reading(5))  # (value 1)
        self.assertNotIn(0, recorded.values())

    def test_the_follower_follows_when_the_journal_cannot_say_what_it_holds(self) -> None:
        from twisted.internet.defer import fail, succeed

        from rpisensor.sensing.reader import InputReader
        from rpisensor.stream.follower import ChangeFollower
        from rpisensor.stream.identity import ClockState
        from rpisensor.stream.state import InputState
        from tests.test_report_v2 import DEFAULT_INPUT
        from tests.test_serve_stream import EdgePins

        appended = []

        class BrokenJournal:
            def latest_per_sensor(self):
                return fail(sqlite3.OperationalError("disk I/O error"))

            def append(self, entry):
                appended.append(entry)
                return succeed(entry)

        clock = Clock()
        backend = EdgePins(clock)
        reader = InputReader(backend, [DEFAULT_INPUT], inline_runner, clock, wall=clock.seconds)
        reader.setup()
        state = InputState.for_reader(reader, clock)
        state.startService()
        self.addCleanup(state.stopService)
        follower = ChangeFollower(state, BrokenJournal(), ClockState())
        follower.start()
        appended.clear()
        backend.set_level(DEFAULT_INPUT.pin, False)
        clock.advance(0.1)
        self.assertEqual([e.value for e in appended], [1], "a change is recorded though the journal could not say")
