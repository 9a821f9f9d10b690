"""
The plots' history from a receiving role's store, bounded: a JSON Lines
store is read from its end (the same window as the SQLite store's indexed
query, however old the file), at most L{MAX_SCAN} bytes, and only
L{MAX_RUNNING} reads run at once with L{MAX_WAITING} waiting; more get 503.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.store import JsonLinesFile, Record, SQLiteFile
from rpisensor.entries import Reading
from rpisensor.web.api import ReadingsResource
from rpisensor.web.feed import ReceivedFeed, iso_time
from rpisensor.web.history import MAX_RUNNING, MAX_WAITING, HistoryBusy, jsonl_window, sqlite_window, store_history
from tests.test_web import START, Request

#: One reading: (seconds after START it was taken, seconds later it arrived: less than 0 when the
#: Pi's clock is ahead of the collector's).
entries = st.lists(st.tuples(st.integers(0, 600), st.integers(-30, 120)), max_size=60)


def records(taken_and_delays) -> list:
    """Readings in the order they arrived (as the store appends them), and a v1 message among them."""
    arrived = sorted(((t + d, t) for t, d in taken_and_delays))
    out = []
    for seq, (received, taken) in enumerate(arrived, 1):
        out.append(Reading(device="pi", stream="s1", seq=seq, ts=iso_time(START + taken), synced=True,
                           sensor="door" if seq % 3 else "button", value=seq % 2, text=f"r{seq}", peer="127.0.0.1:1",
                           received=iso_time(START + received)))  # fmt: skip
        if seq % 7 == 0:
            out.append(Record(iso_time(START + received), "127.0.0.1:2", "a v1 message"))
    return out


class SameAnswerTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None)
    @given(entries, st.integers(-10, 800), st.integers(1, 30))
    def test_json_lines_answers_as_the_sqlite_index(self, taken_and_delays, begin, limit):
        """Read from its end, a JSON Lines store gives the same window as SQLite's query: readings, start, state before."""
        directory = self.mktemp()
        os.makedirs(directory)
        written = records(taken_and_delays)
        answers = []
        for file in (JsonLinesFile(os.path.join(directory, "r.jsonl")), SQLiteFile(os.path.join(directory, "r.sqlite"))):
            file.open()
            file.write(written)
            file.close()
            read = jsonl_window if isinstance(file, JsonLinesFile) else sqlite_window
            window = read(file.path, iso_time(START + begin), limit)
            answers.append(([(r.ts, r.text) for r in window.readings], window.start,
                            sorted((r.device, r.sensor, r.ts) for r in window.before)))  # fmt: skip
        self.assertEqual(answers[0], answers[1])

    def test_the_scan_is_bounded(self):
        """However large the store, one read goes through at most max_scan bytes from its end."""
        path = self.mktemp() + ".jsonl"
        file = JsonLinesFile(path)
        file.open()
        file.write(records([(0, 0)] * 5000))  # all taken and received at START: all in range
        file.close()
        everything = jsonl_window(file.path, iso_time(START), 10_000).readings
        self.assertEqual(len(everything), 5000)
        tail = jsonl_window(file.path, iso_time(START), 10_000, max_scan=10_000).readings
        self.assertLess(len(tail), 60)
        self.assertEqual([r.text for r in tail], [r.text for r in everything[-len(tail):]])


class BusyTests(SynchronousTestCase):
    def test_reads_at_once_are_bounded_and_more_get_503(self):
        """MAX_RUNNING reads run, MAX_WAITING wait, the next request of a time range gets 503."""
        path = self.mktemp() + ".jsonl"
        JsonLinesFile(path).open()
        started: list[Deferred] = []

        def runner(f, *args):
            started.append(Deferred())
            return started[-1]

        history = store_history(path, runner=runner)
        waiting = [history("2026-01-01T00:00:00Z", 10) for _ in range(MAX_RUNNING + MAX_WAITING)]
        self.assertEqual(len(started), MAX_RUNNING)
        self.failureResultOf(history("2026-01-01T00:00:00Z", 10), HistoryBusy)
        resource = ReadingsResource(ReceivedFeed(history=history), wall=lambda: START)
        request = Request(b"/api/readings", window="60")
        request.render(resource)
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"5"])
        self.assertIn("reads of the history run", request.json()["error"])
        started[0].callback([])  # one ends: a waiting one runs, and there is room again
        self.assertEqual(len(started), MAX_RUNNING + 1)
        self.assertEqual(self.successResultOf(waiting[0]), [])  # (what the fake runner gave)
        self.assertNoResult(history("2026-01-01T00:00:00Z", 10))
