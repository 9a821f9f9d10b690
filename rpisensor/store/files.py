"""
The store's file formats: C{.jsonl} files get one JSON object a line;
C{.sqlite} and C{.db} files get a C{readings} table. Blocking: used only from
the store's writer thread (see L{rpisensor.store.writer}).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rpisensor.store.record import Record


class JsonLinesFile:
    """Appends records to a JSON Lines file; each write is flushed to the OS."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def open(self) -> None:
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, records: Sequence[Record]) -> None:
        self._file.write("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records))
        self._file.flush()

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()  # flushes: may fail (a full disk), and the file is closed all the same


class SQLiteFile:
    """Appends records to a C{readings} table, one transaction per batch."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS readings ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " time TEXT NOT NULL, peer TEXT NOT NULL, message TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS readings_time ON readings (time)",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        # Opened when the collector starts (so a bad path is a start-up
        # error), then used only by the writer thread.
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._db:
            for statement in self.SCHEMA:
                self._db.execute(statement)

    def write(self, records: Sequence[Record]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO readings (time, peer, message) VALUES (?, ?, ?)",
                [(r.time, r.peer, r.message) for r in records],
            )

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def store_file_for(path: str | Path) -> JsonLinesFile | SQLiteFile:
    """
    The store for C{path}, chosen by its suffix.

    @raise ValueError: the suffix is not C{.jsonl}, C{.sqlite} or C{.db}.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return JsonLinesFile(path)
    if suffix in (".sqlite", ".db"):
        return SQLiteFile(path)
    raise ValueError(
        f"cannot tell the store format of {str(path)!r}: "
        "use a .jsonl file (JSON Lines) or a .sqlite/.db file (SQLite)"
    )
