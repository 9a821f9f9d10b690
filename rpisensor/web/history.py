"""
The plots' history on the receiving roles: the readings of a time range,
read back from the store (C{--store}) in a thread, with a connection of
its own, so the writer is never held up.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from pathlib import Path
from types import SimpleNamespace

from twisted.internet.threads import deferToThread

from rpisensor.store import JsonLinesFile, SQLiteFile, store_file_for

# The received time is never before the taken one: its index narrows the scan.
_SQLITE_SINCE = (
    "SELECT device, sensor, ts, value, text, unit FROM readings"
    " WHERE seq IS NOT NULL AND time >= ? AND ts >= ? ORDER BY id DESC LIMIT ?"
)


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


def jsonl_since(path: Path, begin: str, limit: int) -> list[SimpleNamespace]:
    """As L{sqlite_since}, for a JSON Lines store: one pass over the file. Blocking."""
    kept: deque[SimpleNamespace] = deque(maxlen=limit)
    with open(path, "rb") as f:
        for line in f:
            if b'"reading"' not in line:
                continue
            try:
                obj = json.loads(line)
                if obj.get("kind") == "reading" and obj["ts"] >= begin:
                    kept.append(_reading(obj["device"], obj["sensor"], obj["ts"], obj["value"],
                                         obj["text"], obj.get("unit")))  # fmt: skip
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line, or a v1 message
    return list(kept)


def store_history(path: str | None):
    """C{history(begin, limit) -> Deferred} for the store at C{path}, or C{None} without one."""
    if path is None:
        return None
    file = store_file_for(path)
    if isinstance(file, SQLiteFile):
        reader = sqlite_since
    elif isinstance(file, JsonLinesFile):
        reader = jsonl_since
    else:
        return None

    def history(begin: str, limit: int):
        return deferToThread(reader, file.path, begin, limit)

    return history
