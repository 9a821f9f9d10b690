"""
The Pi's journal: the durable, ordered, bounded entries of one stream, in an
embedded SQLite file. C{report} uses it as its outbox (entries wait here until
the collector acknowledges them); C{serve} keeps it for subscribers to resume.

Blocking: every method runs in the journal's own thread (see
L{rpisensor.stream.outbox}), never on the reactor.

Durability, in order of what can happen:
  - Each batch of entries is committed (WAL mode, C{synchronous=NORMAL}) before
    any of them is sent: a killed process (SIGKILL) loses nothing committed,
    since the WAL is in the OS's cache. A batch being committed when the
    process dies is lost whole, and none of it was sent.
  - Once a second (L{sync}), a commit under C{synchronous=FULL} fsyncs the WAL:
    a power cut loses at most the entries committed since (never more than
    L{SYNC_EVERY}: reaching it forces a sync). With C{sync="full"} every
    commit is synced.
  - A power cut can lose entries that were already sent, so after one (an
    unclean stop on an earlier boot) the sequence skips ahead by
    L{SYNC_EVERY} behind a gap entry: a seq is never used for two readings.

SQLite in WAL mode with 512-byte pages (the smallest) keeps a steady stream of small appends to
about one page written per commit, which is what an SD card wants.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rpisensor.store.opening import open_error
from rpisensor.wire.v2 import Gap, Reading

#: Entries committed without an fsync, at most; reaching it forces one.
SYNC_EVERY = 1000

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

_SCHEMA = (
    # A reading has last NULL; a gap covers seq..last and says why.
    "CREATE TABLE IF NOT EXISTS entries ("
    " seq INTEGER PRIMARY KEY, last INTEGER, ts TEXT, synced INTEGER,"
    " sensor TEXT, value NUMERIC, text TEXT, unit TEXT, reason TEXT)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)

Entry = Reading | Gap

_SELECT = "SELECT seq, last, ts, synced, sensor, value, text, unit, reason FROM entries "


@dataclass(frozen=True)
class NewReading:
    """A reading before the journal gives it its place (seq) in the stream."""

    ts: str
    synced: bool
    sensor: str
    value: float | int
    text: str
    unit: str | None = None


@dataclass(frozen=True)
class Opened:
    """
    What L{Journal.open} found.

    @ivar created: the file is new, so is the stream.
    @ivar skipped: the gap entry written after a power cut, if any.
    """

    stream: str
    created: bool
    skipped: Gap | None


def boot_id() -> str:
    """This boot's id (Linux); a fresh one per boot tells a power cut from a killed process."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


class JournalError(RuntimeError):
    """The journal file cannot be used; the message says why."""


class Journal:
    """
    The entries of one stream, numbered from 1 without holes (a gap entry
    stands for the entries that were dropped).

    @param path: the SQLite file; C{None} keeps the journal in memory only
        (a new stream at every start).
    @param max_entries: the most entries kept; beyond it the oldest go (and,
        for an outbox, a gap entry says so).
    @param sync: C{"batch"} (fsync once a second) or C{"full"} (every commit).
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        max_entries: int = 1_000_000,
        sync: str = "batch",
        current_boot: str | None = None,
    ) -> None:
        if sync not in ("batch", "full"):
            raise ValueError(f"sync must be 'batch' or 'full', got {sync!r}")
        if max_entries < 2:
            raise ValueError("a journal keeps at least 2 entries")
        self.path = None if path is None else Path(path)
        self.max_entries = max_entries
        self.sync_mode = sync
        self._boot = current_boot if current_boot is not None else boot_id()
        self._db: sqlite3.Connection | None = None
        self.stream = ""
        #: The first and last seq held (0, 0 when empty); entries between are all present.
        self.first = 0
        self.last = 0
        #: How many entries (rows) are held; a gap entry is one.
        self.rows = 0
        self._unsynced = 0
        #: How many fsyncing commits were made: for tests and the benchmark.
        self.syncs = 0

    # -- opening and closing ---------------------------------------------------

    def open(self) -> Opened:
        """Open (or create) the file, recover from a power cut, mark the journal in use."""
        try:
            return self._open()
        except sqlite3.DatabaseError as e:
            raise JournalError(f"cannot use the journal {self.path}: {open_error(self.path, e)}") from None

    def _open(self) -> Opened:
        target = ":memory:" if self.path is None else str(self.path)
        db = self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA page_size=512")  # takes effect only in a new file
        if self.path is not None:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(f"cannot use the journal {self.path}: SQLite refused WAL mode ({mode})")
        db.execute("PRAGMA synchronous=FULL")
        with _transaction(db):
            for statement in _SCHEMA:
                db.execute(statement)
        meta = dict(db.execute("SELECT key, value FROM meta"))
        created = "stream" not in meta
        self.stream = meta.get("stream") or secrets.token_hex(8)
        self._load_bounds()
        skipped = None
        if not created and meta.get("clean") == "0" and meta.get("boot") != self._boot:
            skipped = self._skip_after_power_cut()
        with _transaction(db):
            _set(db, "stream", self.stream)
            _set(db, "boot", self._boot)
            _set(db, "clean", "0")
        self._use_sync_mode()
        return Opened(self.stream, created, skipped)

    def _skip_after_power_cut(self) -> Gap:
        # What was committed but not yet synced when the power went may be
        # gone from here and already stored by a receiver: never reuse those seqs.
        gap = Gap(self.stream, self.last + 1, self.last + SYNC_EVERY,
                  "the Pi lost power before these were saved; any not already stored were lost")  # fmt: skip
        with _transaction(self._db):
            self._insert(gap)
        self._load_bounds()
        return gap

    def close(self, clean: bool = True) -> None:
        """Sync, mark the journal stopped cleanly (or not), and close the file."""
        if self._db is None:
            return
        db, self._db = self._db, None
        try:
            db.execute("PRAGMA synchronous=FULL")
            with _transaction(db):
                _set(db, "clean", "1" if clean else "0")
        finally:
            db.close()

    # -- writing ------------------------------------------------------------------

    def append(self, readings: Sequence[NewReading]) -> list[Reading]:
        """
        Give C{readings} the next seqs and commit them in one transaction,
        dropping the oldest entries beyond the bound. Returns them as stream
        entries, in order.
        """
        db = self._db
        entries = [
            Reading(self.stream, self.last + 1 + i, r.ts, r.synced, r.sensor, r.value, r.text, r.unit)
            for i, r in enumerate(readings)
        ]
        if not entries:
            return []
        with _transaction(db):
            db.executemany(
                "INSERT INTO entries (seq, ts, synced, sensor, value, text, unit) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.seq, e.ts, int(e.synced), e.sensor, e.value, e.text, e.unit) for e in entries],
            )
        self.last = entries[-1].seq
        self.rows += len(entries)
        if not self.first:
            self.first = entries[0].seq
        self._unsynced += len(entries)
        if self._unsynced >= SYNC_EVERY and self.sync_mode == "batch":
            self.sync()
        elif self.sync_mode == "full":
            self._unsynced = 0
            self.syncs += 1
        return entries

    def sync(self) -> bool:
        """
        Make every commit so far durable across a power cut (one fsync), if
        any is not yet; return whether it synced.
        """
        if not self._unsynced:
            return False
        db = self._db
        db.execute("PRAGMA synchronous=FULL")
        try:
            with _transaction(db):
                _set(db, "synced", str(self.last))  # a commit under FULL fsyncs the WAL
        finally:
            self._use_sync_mode()
        self._unsynced = 0
        self.syncs += 1
        return True

    def drop_oldest_over(self, limit: int, reason: str) -> Gap | None:
        """
        Keep at most C{limit} entries: the oldest others become one gap entry
        (merged with a gap already first), so the stream still says what is
        missing. Returns that gap, or C{None} if nothing had to go.
        """
        if self.rows <= limit:
            return None
        db = self._db
        excess = self.rows - limit + 1  # room for the gap entry itself
        seq, last = db.execute(
            "SELECT seq, last FROM entries ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)
        ).fetchone()
        head = self._entry_at(self.first)
        if isinstance(head, Gap) and head.reason != reason:
            reason = f"{reason} (and before that: {head.reason})"[:200]
        gap = Gap(self.stream, self.first, last if last is not None else seq, reason)
        with _transaction(db):
            db.execute("DELETE FROM entries WHERE seq <= ?", (gap.last,))
            self._insert(gap)
        self._load_bounds()
        return gap

    def trim_through(self, seq: int) -> int:
        """
        Forget entries up to C{seq} (acknowledged by the collector), keeping
        the newest entry so the numbering survives a restart. Returns how
        many went.
        """
        through = min(seq, self.last - 1)
        if through < self.first or not self.first:
            return 0
        db = self._db
        with _transaction(db):  # an entry (a gap, maybe) that reaches past through stays whole
            # (seq <= through too, which every such entry has: the primary key's range, not a scan)
            gone = db.execute(
                "DELETE FROM entries WHERE seq <= ? AND COALESCE(last, seq) <= ?", (through, through)
            ).rowcount
        self._load_bounds()
        return gone

    def trim_to(self, keep: int) -> int:
        """Keep only the newest C{keep} entries (the journal of C{serve}); returns how many went."""
        if self.rows <= keep:
            return 0
        seq, last = self._db.execute(
            "SELECT seq, last FROM entries ORDER BY seq LIMIT 1 OFFSET ?", (self.rows - keep - 1,)
        ).fetchone()
        return self.trim_through(last if last is not None else seq)

    # -- reading --------------------------------------------------------------------

    def after(self, seq: int, limit: int) -> list[Entry]:
        """
        Up to C{limit} entries after C{seq}, in order: first a gap that
        reaches past C{seq}, if one does, then the entries that start after it.

        Entries never overlap, so only the last one starting at or before
        C{seq} can reach past it; both lookups are ranges of the primary key,
        so a replay costs the same at the end of a long outbox as at its start.
        """
        db = self._db
        rows = []
        head = db.execute(_SELECT + "WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (seq,)).fetchone()
        if head is not None and head[1] is not None and head[1] > seq:
            rows.append(head)
        rows += db.execute(_SELECT + "WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit - len(rows))).fetchall()
        return [self._from_row(row) for row in rows]

    def readings_since(self, ts: str, limit: int) -> list[Reading]:
        """
        The newest C{limit} readings taken at or after C{ts} (the entries' ISO
        form), oldest first: a plot's history.
        """
        rows = self._db.execute(
            "SELECT seq, last, ts, synced, sensor, value, text, unit, reason FROM entries "
            "WHERE last IS NULL AND ts >= ? ORDER BY seq DESC LIMIT ?",
            (ts, limit),
        ).fetchall()
        return [self._from_row(row) for row in reversed(rows)]

    def latest_per_sensor(self) -> dict[str, Reading]:
        """The newest reading of each sensor: a subscriber's snapshot."""
        rows = self._db.execute(
            "SELECT seq, last, ts, synced, sensor, value, text, unit, reason FROM entries "
            "WHERE seq IN (SELECT MAX(seq) FROM entries WHERE last IS NULL GROUP BY sensor) ORDER BY seq"
        ).fetchall()
        return {entry.sensor: entry for entry in map(self._from_row, rows)}

    def gaps(self) -> list[Gap]:
        rows = self._db.execute(
            "SELECT seq, last, ts, synced, sensor, value, text, unit, reason FROM entries "
            "WHERE last IS NOT NULL ORDER BY seq"
        ).fetchall()
        return [self._from_row(row) for row in rows]

    def size_bytes(self) -> int:
        """The bytes the entries take on disk (pages in use)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    # -- internals ----------------------------------------------------------------------

    def _use_sync_mode(self) -> None:
        self._db.execute("PRAGMA synchronous=" + ("FULL" if self.sync_mode == "full" else "NORMAL"))

    def _load_bounds(self) -> None:
        first, last_seq, last_gap = self._db.execute(
            "SELECT MIN(seq), MAX(seq), MAX(last) FROM entries"
        ).fetchone()
        self.first = first or 0
        self.last = max(last_seq or 0, last_gap or 0)
        self.rows = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def _entry_at(self, seq: int) -> Entry:
        row = self._db.execute(
            "SELECT seq, last, ts, synced, sensor, value, text, unit, reason FROM entries WHERE seq = ?",
            (seq,),
        ).fetchone()
        return self._from_row(row)

    def _insert(self, gap: Gap) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO entries (seq, last, reason) VALUES (?, ?, ?)",
            (gap.first, gap.last, gap.reason),
        )
        self.last = max(self.last, gap.last)

    def _from_row(self, row) -> Entry:
        seq, last, ts, synced, sensor, value, text, unit, reason = row
        if last is not None:
            return Gap(self.stream, seq, last, reason)
        return Reading(self.stream, seq, ts, bool(synced), sensor, value, text, unit)


class _transaction:
    """C{BEGIN IMMEDIATE} ... C{COMMIT}, or C{ROLLBACK} on an error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _set(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def span(entry: Entry) -> tuple[int, int]:
    """The first and last seq an entry stands for: one for a reading, a range for a gap."""
    if isinstance(entry, Gap):
        return entry.first, entry.last
    return entry.seq, entry.seq
