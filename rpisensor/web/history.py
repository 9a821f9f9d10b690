"""
The history on the receiving roles, read back from the store (C{--store})
in a thread, with a connection of its own, so the writer is never held up:
the readings of a time range (the plots) and each stream's gaps (the health).

Bounded, since any page may ask: at most L{MAX_RUNNING} reads of a time
range run at once and L{MAX_WAITING} wait (more get L{HistoryBusy}, a 503),
and a JSON Lines store is read from its end, at most L{MAX_SCAN} bytes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from pathlib import Path
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


def _reading(device, sensor, ts, value, text, unit) -> SimpleNamespace:
    return SimpleNamespace(device=device, sensor=sensor, ts=ts, value=value, text=text, unit=unit)


def sqlite_since(path: Path, begin: str, limit: int) -> list[SimpleNamespace]:
    """The newest C{limit} readings taken since C{begin}, oldest first. Blocking."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(_SQLITE_SINCE, (begin, begin, limit)).fetchall()
    finally:
        db.close()
    return [_reading(*row) for row in reversed(rows)]


def jsonl_since(path: Path, begin: str, limit: int, max_scan: int = MAX_SCAN) -> list[SimpleNamespace]:
    """
    As L{sqlite_since}, for a JSON Lines store. Blocking. The file is read
    from its end, as the SQLite query reads its index: records are appended
    as they arrive and a reading arrives after it is taken, so the read stops
    at the first record received before C{begin}, or once it has C{limit}
    readings, or after C{max_scan} bytes.
    """
    kept: list[SimpleNamespace] = []
    for line in _lines_from_the_end(path, max_scan):
        try:
            obj = json.loads(line)
            received = obj.get("received", obj.get("time"))
            if isinstance(received, str) and received < begin:
                break
            if obj.get("kind") == "reading" and obj["ts"] >= begin:
                kept.append(_reading(obj["device"], obj["sensor"], obj["ts"], obj["value"],
                                     obj["text"], obj.get("unit")))  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a torn last line, or one edited by hand
        if len(kept) >= limit:
            break
    kept.reverse()
    return kept


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
    """The store file at C{path} and its C{(readings since, gaps)} readers, or C{None}."""
    if path is None:
        return None
    file = store_file_for(path)
    if isinstance(file, SQLiteFile):
        return file, sqlite_since, sqlite_gaps
    if isinstance(file, JsonLinesFile):
        return file, jsonl_since, jsonl_gaps
    return None


def store_history(path: str | None, runner=deferToThread):
    """
    C{history(begin, limit) -> Deferred} for the store at C{path}, or C{None}
    without one; past L{MAX_RUNNING} reads at once and L{MAX_WAITING} waiting,
    it fails with L{HistoryBusy}.

    @param runner: runs a blocking call, C{runner(f, *args) -> Deferred}.
    """
    readers = _readers(path)
    if readers is None:
        return None
    file, since, _ = readers
    running = DeferredSemaphore(MAX_RUNNING)

    def history(begin: str, limit: int):
        if not running.tokens and len(running.waiting) >= MAX_WAITING:
            return fail(HistoryBusy(
                f"{MAX_RUNNING} reads of the history run and {MAX_WAITING} wait already; try again in a moment"
            ))  # fmt: skip
        return running.run(runner, since, file.path, begin, limit)

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
