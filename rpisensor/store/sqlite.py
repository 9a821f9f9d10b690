"""
The SQLite store: a C{readings} table and a C{gaps} table.

A v1 message fills C{time}, C{peer} and C{message}, as always. A v2 reading
fills the stream's columns (C{device}, C{stream}, C{seq}, C{ts}, C{synced},
C{sensor}, C{value}, C{unit}, C{text}, C{received}, C{identity}) and the v1
ones too (C{time} is when it was received, C{message} its text), so queries
written for v1 stores keep working. A unique index on C{(device, stream,
seq)} makes a replayed reading a no-op (C{INSERT OR IGNORE}).

A file made by an older version (v1 columns only) gets the new columns and
tables when it is opened: existing rows are kept as they are.

Blocking: used only from the store's writer thread (see L{rpisensor.store.writer}).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

from rpisensor.store.record import HighWaters, Record, Span, Standing, StoredRecord
from rpisensor.entries import Gap, Reading

#: The columns a v2 reading adds to C{readings}, with their types.
STREAM_COLUMNS = (
    ("device", "TEXT"), ("stream", "TEXT"), ("seq", "INTEGER"), ("ts", "TEXT"),
    ("synced", "INTEGER"), ("sensor", "TEXT"), ("value", "NUMERIC"), ("unit", "TEXT"),
    ("text", "TEXT"), ("received", "TEXT"), ("identity", "TEXT"), ("digest", "TEXT"),
)  # fmt: skip

_V1_TABLE = (
    "CREATE TABLE IF NOT EXISTS readings ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " time TEXT NOT NULL, peer TEXT NOT NULL, message TEXT NOT NULL)"
)
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS readings_time ON readings (time)",
    # v1 rows have no device, stream or seq: NULLs never collide in a unique index.
    "CREATE UNIQUE INDEX IF NOT EXISTS readings_stream ON readings (device, stream, seq)",
    "CREATE TABLE IF NOT EXISTS gaps ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " device TEXT NOT NULL, stream TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER NOT NULL,"
    " reason TEXT NOT NULL, peer TEXT NOT NULL, received TEXT NOT NULL, identity TEXT, digest TEXT)",
    "CREATE UNIQUE INDEX IF NOT EXISTS gaps_stream ON gaps (device, stream, from_seq)",
    # Who may send each stream: the first sender that claimed it.
    "CREATE TABLE IF NOT EXISTS streams ("
    " device TEXT NOT NULL, stream TEXT NOT NULL, owner TEXT NOT NULL, claimed TEXT NOT NULL,"
    " PRIMARY KEY (device, stream)) WITHOUT ROWID",
)

_INSERT_MESSAGE = "INSERT INTO readings (time, peer, message) VALUES (?, ?, ?)"
_INSERT_READING = (
    "INSERT OR IGNORE INTO readings (time, peer, message, device, stream, seq, ts, synced, sensor,"
    " value, unit, text, received, identity, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_GAP = (
    "INSERT OR IGNORE INTO gaps (device, stream, from_seq, to_seq, reason, peer, received, identity, digest)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: The entry of a stream ending at or covering seq N (both lookups ranges of a unique index).
_ENTRY = (
    "SELECT seq, seq, digest FROM readings WHERE device = ? AND stream = ? AND seq = ?",
    "SELECT from_seq, to_seq, digest FROM gaps WHERE device = ? AND stream = ? AND from_seq <= ?"
    " ORDER BY from_seq DESC LIMIT 1",
)
_OWNER = "SELECT owner FROM streams WHERE device = ? AND stream = ?"
_CLAIM = "INSERT OR IGNORE INTO streams (device, stream, owner, claimed) VALUES (?, ?, ?, ?)"
_POSITION = (
    "SELECT MAX(seq) FROM readings WHERE device = ? AND stream = ?",
    "SELECT MAX(to_seq) FROM gaps WHERE device = ? AND stream = ?",
)
_HIGH_WATERS = (
    "SELECT device, stream, MAX(seq) FROM readings WHERE seq IS NOT NULL GROUP BY device, stream",
    "SELECT device, stream, MAX(to_seq) FROM gaps GROUP BY device, stream",
)


def _message_row(r: Record) -> tuple:
    return (r.time, r.peer, r.message)


def _reading_row(r: Reading) -> tuple:
    return (
        r.received, r.peer, r.text, r.device, r.stream, r.seq, r.ts, int(r.synced), r.sensor,
        r.value, r.unit, r.text, r.received, r.identity, r.digest or None,
    )  # fmt: skip


def _gap_row(g: Gap) -> tuple:
    return (g.device, g.stream, g.first, g.last, g.reason, g.peer, g.received, g.identity, g.digest or None)


_BY_KIND = {
    Record: (_INSERT_MESSAGE, _message_row),
    Reading: (_INSERT_READING, _reading_row),
    Gap: (_INSERT_GAP, _gap_row),
}


class SQLiteFile:
    """
    Appends records to the C{readings} and C{gaps} tables, one transaction per
    batch, committed under C{synchronous=FULL} in WAL mode: one fsync of the
    log per batch, and a batch is either all in the file or not at all.

    @ivar high_waters: the highest seq stored of each stream, read when the
        file is opened. Entries are only ever stored in order, each stream
        from its start (or behind a gap record), so the highest is also the
        highest stored contiguously.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self.high_waters: HighWaters = {}

    def open(self) -> None:
        # Opened when the collector starts (so a bad path is a start-up
        # error), then used only by the writer thread.
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_V1_TABLE)
            have = {row[1] for row in db.execute("PRAGMA table_info(readings)")}
            for name, kind in STREAM_COLUMNS:
                if name not in have:  # a store written by a version before the event streams (or digests)
                    db.execute(f"ALTER TABLE readings ADD COLUMN {name} {kind}")
            for statement in _INDEXES:
                db.execute(statement)
            if "digest" not in {row[1] for row in db.execute("PRAGMA table_info(gaps)")}:
                db.execute("ALTER TABLE gaps ADD COLUMN digest TEXT")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        marks: HighWaters = {}
        for query in _HIGH_WATERS:
            for device, stream, last in db.execute(query):
                key = (device, stream)
                marks[key] = max(last, marks.get(key, 0))
        self.high_waters = marks

    def write(self, records: Sequence[StoredRecord]) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            # In runs of one kind, so rows keep the order they arrived in.
            for kind, run in groupby(records, type):
                statement, row = _BY_KIND[kind]
                db.executemany(statement, map(row, run))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def position(self, device: str, stream: str) -> int:
        """The highest seq of C{(device, stream)} in the file (0: none)."""
        found = (self._db.execute(query, (device, stream)).fetchone()[0] for query in _POSITION)
        return max((last for last in found if last is not None), default=0)

    def standing(self, device: str, stream: str) -> Standing:
        """Where C{(device, stream)} stands in the file now (see L{Standing})."""
        stored = self.position(device, stream)
        at = self.entry(device, stream, stored) if stored else None
        owner = self._db.execute(_OWNER, (device, stream)).fetchone()
        return Standing(stored, at[2] if at is not None and at[1] == stored else None, owner and owner[0])

    def entry(self, device: str, stream: str, seq: int) -> Span | None:
        """The entry of C{(device, stream)} covering C{seq}: C{(first, last, digest)}, or C{None}."""
        for query in _ENTRY:
            row = self._db.execute(query, (device, stream, seq)).fetchone()
            if row is not None and row[0] <= seq <= row[1]:
                return row[0], row[1], row[2]
        return None

    def claim(self, device: str, stream: str, owner: str, when: str) -> str:
        """Record C{owner} as C{(device, stream)}'s, unless it has one; return the one it has now."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_CLAIM, (device, stream, owner, when))
            found = db.execute(_OWNER, (device, stream)).fetchone()[0]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return found

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
