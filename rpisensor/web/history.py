"""
The history on the receiving roles, read back from the store (C{--store})
in a thread, with a connection of its own, so the writer is never held up:
the readings of a time range and the state before it (the plots), and each
stream's gaps (the health).

Bounded, since any page may ask: at most L{MAX_RUNNING} reads of a time
range run at once and L{MAX_WAITING} wait (more get L{HistoryBusy}, a 503),
and a JSON Lines store is read from its end, at most L{MAX_SCAN} bytes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from pathlib import Path
from dataclasses import dataclass
from types import SimpleNamespace

from twisted.internet.defer import DeferredSemaphore, fail
from twisted.internet.threads import deferToThread

from rpisensor.store import JsonLinesFile, SQLiteFile, store_file_for
from rpisensor.web.gaps import LATEST, History, gap_of

# The received time is never before the taken one: its index narrows the scan.
_SQLITE_SINCE = (
    "SELECT device, sensor, ts, value, text, unit FROM readings"
    " WHERE seq IS NOT NULL AND time >= ? AND ts >= ? ORDER BY id DESC LIMIT ?"
)
# The newest reading of each sensor taken before a time: SQLite gives a MAX()'s row's other columns.
_SQLITE_BEFORE = (
    "SELECT device, sensor, MAX(ts), value, text, unit FROM readings"
    " WHERE seq IS NOT NULL AND ts < ? GROUP BY device, sensor"
)


_SQLITE_GAP_COUNTS = "SELECT device, stream, COUNT(*) FROM gaps GROUP BY device, stream"
# The newest of one stream's gaps: a range of the (device, stream, from_seq) index.
_SQLITE_LATEST_GAPS = (
    "SELECT from_seq, to_seq, reason, received FROM gaps WHERE device = ? AND stream = ?"
    " ORDER BY from_seq DESC LIMIT ?"
)


#: Reads of a time range running at once (each a thread of the reactor's pool), and waiting.
MAX_RUNNING = 2
MAX_WAITING = 8
#: Bytes of a JSON Lines store one read of a time range goes through at most, from its end.
MAX_SCAN = 32 * 1024 * 1024
#: Bytes read at a time, going backwards.
_BLOCK = 64 * 1024


class HistoryBusy(Exception):
    """Too many reads of the history run and wait already: try again later."""


@dataclass(frozen=True)
class StoredWindow:
    """
    A time window as the store holds it: C{readings}, the newest C{limit}
    taken since its start, oldest first (as stored); C{start}, from when they
    are complete (later than asked when the limit left older ones out); and
    C{before}, the newest reading of each sensor taken before C{start}.
    """

    readings: list[SimpleNamespace]
    before: list[SimpleNamespace]
    start: str


def _reading(device, sensor, ts, value, text, unit) -> SimpleNamespace:
    return SimpleNamespace(device=device, sensor=sensor, ts=ts, value=value, text=text, unit=unit)


def sqlite_window(path: Path, begin: str, limit: int) -> StoredWindow:
    """The readings taken since C{begin} and the state before them. Blocking."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(_SQLITE_SINCE, (begin, begin, limit)).fetchall()
        start = min(row[2] for row in rows) if len(rows) >= limit else begin
        before = db.execute(_SQLITE_BEFORE, (start,)).fetchall()
    finally:
        db.close()
    return StoredWindow([_reading(*row) for row in reversed(rows)], [_reading(*row) for row in before], start)


def jsonl_window(path: Path, begin: str, limit: int, max_scan: int = MAX_SCAN) -> StoredWindow:
    """
    As L{sqlite_window}, for a JSON Lines store. Blocking. The file is read
    from its end, at most its last C{max_scan} bytes: the window is the
    newest C{limit} readings taken and received since C{begin} (as the
    SQLite query reads its index; the store is in the order they arrived),
    and the state before it the newest reading of each sensor taken before
    the window's start among those bytes.
    """
    kept: list[SimpleNamespace] = []  # newest first
    start: str | None = None  # known once the window holds `limit` readings, else C{begin}
    undecided: list[SimpleNamespace] = []  # taken since C{begin} but outside the window, met before C{start} was known
    before: dict[tuple[str, str], SimpleNamespace] = {}

    def older(reading: SimpleNamespace) -> None:
        key = reading.device, reading.sensor
        if key not in before or before[key].ts < reading.ts:
            before[key] = reading

    for line in _lines_from_the_end(path, max_scan):
        if b'"reading"' not in line:
            continue
        try:
            obj = json.loads(line)
            if obj.get("kind") != "reading":
                continue
            reading = _reading(obj["device"], obj["sensor"], obj["ts"], obj["value"], obj["text"],
                               obj.get("unit"))  # fmt: skip
            received = obj.get("received")
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a torn last line, or one edited by hand
        if start is None and reading.ts >= begin and (not isinstance(received, str) or received >= begin):
            kept.append(reading)
            if len(kept) >= limit:
                start = min(r.ts for r in kept)
                for other in undecided:
                    if other.ts < start:
                        older(other)
                undecided = []
        elif reading.ts < (begin if start is None else start):
            older(reading)
        elif start is None:
            undecided.append(reading)  # (a reading the Pi timed after it arrived: its clock was ahead)
    kept.reverse()
    return StoredWindow(kept, list(before.values()), start if start is not None else begin)


def _lines_from_the_end(path: Path, max_scan: int):
    """The lines of the file at C{path}, last first, from at most its last C{max_scan} bytes."""
    with open(path, "rb") as f:
        end = f.seek(0, 2)
        start = max(0, end - max_scan)
        rest = b""
        while end > start:
            size = min(_BLOCK, end - start)
            end -= size
            f.seek(end)
            lines = (f.read(size) + rest).split(b"\n")
            rest = lines.pop(0)  # maybe the end of a line that began earlier
            yield from (line for line in reversed(lines) if line)
        if start == 0 and rest:
            yield rest


def sqlite_gaps(path: Path, keep: int = LATEST) -> History:
    """Each stream's count of gaps and its newest C{keep}, oldest first. Blocking."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        history = {}
        for device, stream, count in db.execute(_SQLITE_GAP_COUNTS).fetchall():
            rows = db.execute(_SQLITE_LATEST_GAPS, (device, stream, keep)).fetchall()
            history[device, stream] = (count, [gap_of(*row) for row in reversed(rows)])
    finally:
        db.close()
    return history


def jsonl_gaps(path: Path, keep: int = LATEST) -> History:
    """As L{sqlite_gaps}, for a JSON Lines store: one pass over the file. Blocking."""
    counts: dict[tuple[str, str], int] = {}
    latest: dict[tuple[str, str], deque[dict]] = {}
    with open(path, "rb") as f:
        for line in f:
            if b'"gap"' not in line:
                continue
            try:
                obj = json.loads(line)
                if obj.get("kind") != "gap":
                    continue
                key = obj["device"], obj["stream"]
                gap = gap_of(obj["from"], obj["to"], obj["reason"], obj.get("received"))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line, or a v1 message
            counts[key] = counts.get(key, 0) + 1
            latest.setdefault(key, deque(maxlen=keep)).append(gap)
    return {key: (count, list(latest[key])) for key, count in counts.items()}


def _readers(path: str | None):
    """The store file at C{path} and its C{(window, gaps)} readers, or C{None}."""
    if path is None:
        return None
    file = store_file_for(path)
    if isinstance(file, SQLiteFile):
        return file, sqlite_window, sqlite_gaps
    if isinstance(file, JsonLinesFile):
        return file, jsonl_window, jsonl_gaps
    return None


def store_history(path: str | None, runner=deferToThread):
    """
    C{history(begin, limit) -> Deferred[StoredWindow]} for the store at
    C{path}, or C{None} without one; past L{MAX_RUNNING} reads at once and
    L{MAX_WAITING} waiting, it fails with L{HistoryBusy}.

    @param runner: runs a blocking call, C{runner(f, *args) -> Deferred}.
    """
    readers = _readers(path)
    if readers is None:
        return None
    file, window, _ = readers
    running = DeferredSemaphore(MAX_RUNNING)

    def history(begin: str, limit: int):
        if not running.tokens and len(running.waiting) >= MAX_WAITING:
            return fail(HistoryBusy(
                f"{MAX_RUNNING} reads of the history run and {MAX_WAITING} wait already; try again in a moment"
            ))  # fmt: skip
        return running.run(runner, window, file.path, begin, limit)

    return history


def store_gaps(path: str | None):
    """C{gaps() -> Deferred[History]} for the store at C{path}, or C{None} without one."""
    readers = _readers(path)
    if readers is None:
        return None
    file, _, gaps = readers

    def history():
        return deferToThread(gaps, file.path)

    return history
