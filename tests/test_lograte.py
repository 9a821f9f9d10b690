"""Tests for L{rpisensor.lograte}: lines by kind per window, and a bounded number of kinds."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.lograte import OTHER_KINDS, RateLimitedLog


class RateLimitedLogTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.log = RateLimitedLog(self.clock, Logger(namespace="test"), burst=20, window=60.0, max_kinds=32)

    def lines(self, events, word: str) -> list[dict]:
        return [e for e in events if word in e.get("log_format", "")]

    def test_burst_per_kind_then_a_summary(self):
        """20 lines of a kind a minute, then one line saying how many were left out."""
        with capturedLogs() as events:
            for n in range(50):
                self.log.info("Client {n} said hello", key="hello", n=n)
            self.clock.advance(60)
            self.log.info("Client {n} said hello", key="hello", n=50)
        self.assertEqual(len(self.lines(events, "said hello")), 21)
        [summary] = self.lines(events, "left out")
        self.assertEqual((summary["count"], summary["kind"]), (30, "hello"))

    def test_keys_a_peer_names_cannot_multiply_the_lines(self):
        """2,000 keys in a minute (a stream each) log at most (32 + 1) kinds' bursts; the table stays bounded."""
        with capturedLogs() as events:
            for n in range(2000):
                for _ in range(3):
                    self.log.info("Stream {n} resuming", key=f"resuming: pi {n}", n=n)
                self.clock.advance(0.01)
        logged = self.lines(events, "resuming")
        self.assertLessEqual(len(logged), (32 + 1) * 20)
        self.assertLessEqual(len(self.log._windows), 33)
        self.assertEqual(self.log.suppressed, 2000 * 3 - len(logged))

    def test_a_kind_in_its_window_keeps_its_count(self):
        """Many new kinds do not give a kind whose lines are used up a fresh budget within its window."""
        for _ in range(20):
            self.log.info("Flood from {peer}", key="flood", peer="x")
        for n in range(500):
            self.log.info("Other {n}", key=f"other {n}", n=n)
        with capturedLogs() as events:
            self.assertFalse(self.log.info("Flood from {peer}", key="flood", peer="x"))
        self.assertEqual(self.lines(events, "Flood"), [])

    def test_ended_kinds_are_forgotten_with_their_summary(self):
        """Once its window ended, a kind makes room for a new one, after saying what it left out."""
        for n in range(32):
            for _ in range(21):
                self.log.info("Kind {n}", key=f"kind {n}", n=n)
        self.clock.advance(60)
        with capturedLogs() as events:
            self.assertTrue(self.log.info("A new kind", key="new"))
        self.assertEqual(len(self.lines(events, "left out")), 32)
        self.assertEqual(set(self.log._windows), {"new"})

    def test_left_out_counts_where_the_line_went(self):
        """A caller's left_out of a key beyond max_kinds counts in the other kinds' window."""
        for n in range(32):
            self.log.info("Kind {n}", key=f"kind {n}", n=n)
        for _ in range(20):
            self.log.info("Beyond", key="beyond")
        self.assertFalse(self.log.info("Beyond", key="beyond"))
        self.log.left_out("beyond", 99)
        self.assertEqual(self.log._windows[OTHER_KINDS].suppressed, 100)
        with capturedLogs() as events:
            self.log.flush()
        [summary] = [e for e in self.lines(events, "left out") if e["kind"] == OTHER_KINDS]
        self.assertEqual((summary["count"], summary["log_level"]), (100, LogLevel.warn))
