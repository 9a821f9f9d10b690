"""
The Pi's journal: the durable, ordered, bounded entries of one stream, in an
embedded SQLite file. C{report} uses it as its outbox (entries wait here until
the collector acknowledges them); C{serve} keeps it for subscribers to resume.

Blocking: every method runs in the journal's own thread (see
L{rpisensor.stream.journal_service}), never on the reactor.

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

Identity: the stream's id and its owner's secret are made with the file (a
new stream has new ones); each open is a new incarnation, and every entry
carries the stream's hash chain through it (L{rpisensor.stream.chain}), so a
copy of the file (a restored or cloned SD card) is told apart from the
original as soon as either writes an entry of its own. The last seq a
receiver acknowledged is kept too, so a receiver that goes backwards (restored
from a backup) is noticed.

Cost: the bounds (first, last, rows) are kept as entries come and go, never
counted again, so an append costs the same in a full journal as in an empty
one; only L{Journal.open} counts the rows once.

SQLite in WAL mode with 512-byte pages (the smallest) keeps a steady stream of small appends to
about one page written per commit, which is what an SD card wants.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rpisensor.entries import Entry, Gap, Reading
from rpisensor.store.opening import open_error
from rpisensor.stream.chain import link

#: Entries committed without an fsync, at most; reaching it forces one.
SYNC_EVERY = 1000

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

_SCHEMA = (
    # A reading has last NULL; a gap covers seq..last and says why. digest: the chain through it.
    "CREATE TABLE IF NOT EXISTS entries ("
    " seq INTEGER PRIMARY KEY, last INTEGER, ts TEXT, synced INTEGER,"
    " sensor TEXT, value NUMERIC, text TEXT, unit TEXT, reason TEXT, digest TEXT)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)

_COLUMNS = "seq, last, ts, synced, sensor, value, text, unit, reason, digest"
_SELECT = f"SELECT {_COLUMNS} FROM entries "
_INSERT = f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

#: Why the entries of a power cut are skipped.
POWER_CUT = "the Pi lost power before these were saved; any not already stored were lost"


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


@dataclass(frozen=True)
class Forked:
    """
    What L{Journal.fork} did: the stream C{old} became C{new}, carrying
    C{carried} entries (renumbered from 1) that followed seq C{after} of the old one.
    """

    old: str
    new: str
    after: int
    carried: int


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

    @ivar stream: the stream's id; C{secret} its owner's secret (both made with
        the stream); C{incarnation} this open's nonce.
    @ivar first: the first seq held, C{last} the last (0, 0 when empty); the
        entries between are all present. C{rows}: how many entries (a gap is one).
    @ivar acked: the last seq a receiver acknowledged, as far as this journal
        knows (kept across restarts; an outbox's only).
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
        self.secret = ""
        self.incarnation = ""
        self.first = 0
        self.last = 0
        self.rows = 0
        self.acked = 0
        self._acked_saved = 0
        #: The digest of the last entry, and of the last one trimmed (seq, digest).
        self._head = ""
        self._base = (0, "")
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
            if "digest" not in {row[1] for row in db.execute("PRAGMA table_info(entries)")}:
                db.execute("ALTER TABLE entries ADD COLUMN digest TEXT")  # a journal of an older version
        meta = dict(db.execute("SELECT key, value FROM meta"))
        created = "stream" not in meta
        self.stream = meta.get("stream") or secrets.token_hex(8)
        self.secret = meta.get("secret") or secrets.token_hex(16)
        self.incarnation = secrets.token_hex(4)
        base_seq, _, base_digest = meta.get("base", "0 ").partition(" ")
        self._base = (int(base_seq), base_digest)
        self._count()
        # A journal of an older version knows only that what it trimmed was acknowledged.
        self.acked = self._acked_saved = int(meta.get("acked", max(0, self.first - 1)))
        skipped = None
        if not created and meta.get("clean") == "0" and meta.get("boot") != self._boot:
            skipped = self._skip_after_power_cut()
        with _transaction(db):
            _set(db, "stream", self.stream)
            _set(db, "secret", self.secret)
            _set(db, "boot", self._boot)
            _set(db, "clean", "0")
        self._use_sync_mode()
        return Opened(self.stream, created, skipped)

    def _count(self) -> None:
        """Read the bounds from the file: at the open only (the count is of every row)."""
        db = self._db
        self.first = db.execute("SELECT MIN(seq) FROM entries").fetchone()[0] or 0
        newest = db.execute("SELECT seq, last, digest FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        if newest is None:
            self.last, self._head = self._base[0], self._base[1]
        else:
            self.last = newest[1] if newest[1] is not None else newest[0]
            self._head = newest[2] or ""
        self.rows = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def _skip_after_power_cut(self) -> Gap:
        # What was committed but not yet synced when the power went may be
        # gone from here and already stored by a receiver: never reuse those seqs.
        return self.append_gap(SYNC_EVERY, POWER_CUT)

    def close(self, clean: bool = True) -> None:
        """Sync, mark the journal stopped cleanly (or not), and close the file."""
        if self._db is None:
            return
        db, self._db = self._db, None
        try:
            db.execute("PRAGMA synchronous=FULL")
            with _transaction(db):
                _set(db, "clean", "1" if clean else "0")
                _set(db, "acked", str(self.acked))
        finally:
            db.close()

    # -- writing ------------------------------------------------------------------

    def append(self, readings: Sequence[Reading]) -> list[Reading]:
        """
        Give C{readings} their place in the stream (the next seqs, the chain's
        digests) and commit them in one transaction. Returns them as stream
        entries, in order.
        """
        if not readings:
            return []
        start = self.last + 1
        for i, reading in enumerate(readings):  # (their place in the stream: see rpisensor.entries)
            reading.stream, reading.seq = self.stream, start + i
        entries = self._chain(readings)
        with _transaction(self._db):
            self._db.executemany(_INSERT, map(_row, entries))
        self._advance(entries)
        self._unsynced += len(entries)
        if self._unsynced >= SYNC_EVERY and self.sync_mode == "batch":
            self.sync()
        elif self.sync_mode == "full":
            self._unsynced = 0
            self.syncs += 1
        return entries

    def append_gap(self, count: int, reason: str) -> Gap:
        """Commit a gap entry standing for the next C{count} seqs, which will never hold readings."""
        [gap] = chained = self._chain([Gap(stream=self.stream, first=self.last + 1, last=self.last + count, reason=reason)])
        with _transaction(self._db):
            self._db.execute(_INSERT, _row(gap))
        self._advance(chained)
        return gap

    def _chain(self, entries: Iterable[Entry]) -> list[Entry]:
        """C{entries} (the next ones, in order), each given its digest."""
        chained = list(entries)
        head = self._head
        for entry in chained:
            head = entry.digest = link(head, self.incarnation, entry)
        return chained

    def _advance(self, committed: list[Entry]) -> None:
        """The bounds after C{committed} (from L{_chain}) were committed: only then."""
        self._head = committed[-1].digest
        self.last = committed[-1].last
        self.rows += len(committed)
        if not self.first:
            self.first = committed[0].first

    def sync(self) -> bool:
        """
        Make every commit so far durable across a power cut (one fsync), if
        any is not yet, with the receiver's last ack; return whether it synced.
        """
        if not self._unsynced and self.acked == self._acked_saved:
            return False
        db = self._db
        db.execute("PRAGMA synchronous=FULL")
        try:
            with _transaction(db):  # a commit under FULL fsyncs the WAL
                _set(db, "synced", str(self.last))
                _set(db, "acked", str(self.acked))
        finally:
            self._use_sync_mode()
        self._acked_saved = self.acked
        self._unsynced = 0
        self.syncs += 1
        return True

    def acknowledged(self, seq: int) -> None:
        """A receiver has everything up to C{seq}: kept at the next L{sync}, let go at the next trim."""
        self.acked = max(self.acked, min(seq, self.last))

    def drop_oldest_over(self, limit: int, reason: str) -> Gap | None:
        """
        Keep at most C{limit} entries: the oldest others become one gap entry
        (merged with a gap already first), so the stream still says what is
        missing. Returns that gap, or C{None} if nothing had to go.

        The gap's digest is the chain's at its end, so the entries after it
        still follow from it.
        """
        if self.rows <= limit:
            return None
        db = self._db
        excess = self.rows - limit + 1  # room for the gap entry itself
        seq, last, digest = db.execute(
            "SELECT seq, last, digest FROM entries ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)
        ).fetchone()
        head = self._entry_at(self.first)
        if isinstance(head, Gap) and head.reason != reason:
            reason = f"{reason} (and before that: {head.reason})"[:200]
        gap = Gap(stream=self.stream, first=self.first, last=last if last is not None else seq, reason=reason,
                  digest=digest or "")  # fmt: skip
        with _transaction(db):
            gone = db.execute("DELETE FROM entries WHERE seq <= ?", (gap.last,)).rowcount
            db.execute(_INSERT, _row(gap))
        self.rows += 1 - gone
        return gap

    def trim_through(self, seq: int, kept_since: str | None = None) -> int:
        """
        Forget entries up to C{seq} (acknowledged by the receiver), keeping
        the newest entry so the numbering survives a restart, and, with
        C{kept_since} (an entry timestamp), every reading taken since then.
        Returns how many went.
        """
        through = min(seq, self.last - 1)
        if through < self.first or not self.first:
            return 0
        db = self._db
        if kept_since is not None:  # (a range of the primary key: what came since the last trim)
            young = db.execute(
                "SELECT MIN(seq) FROM entries WHERE seq >= ? AND seq <= ? AND ts >= ?", (self.first, through, kept_since)
            ).fetchone()[0]
            if young is not None:
                through = young - 1
        # The entry that will be the base: the last one ending at or before through
        # (one reaching past it, a gap, stays whole).
        ending = db.execute(
            "SELECT seq, last, digest FROM entries WHERE seq <= ? ORDER BY seq DESC LIMIT 2", (through,)
        ).fetchall()
        ending = [row for row in ending if (row[1] if row[1] is not None else row[0]) <= through]
        if not ending:
            return 0
        base_seq, base_last, base_digest = ending[0]
        base = (base_last if base_last is not None else base_seq, base_digest or "")
        with _transaction(db):
            gone = db.execute("DELETE FROM entries WHERE seq <= ?", (base_seq,)).rowcount
            _set(db, "base", f"{base[0]} {base[1]}")
        self._base = base
        self.rows -= gone
        self.first = db.execute("SELECT MIN(seq) FROM entries").fetchone()[0] or 0
        return gone

    def trim_to(self, keep: int) -> int:
        """Keep only the newest C{keep} entries (the journal of C{serve}); returns how many went."""
        if self.rows <= keep:
            return 0
        seq, last = self._db.execute(
            "SELECT seq, last FROM entries ORDER BY seq LIMIT 1 OFFSET ?", (self.rows - keep - 1,)
        ).fetchone()
        return self.trim_through(last if last is not None else seq)

    def fork(self, after: int) -> Forked:
        """
        Start a new stream (a new id and secret) that carries, renumbered from
        1 and chained anew, every entry after seq C{after} of this one; the
        rest goes. For a copy of a stream that went apart from the original
        (see L{rpisensor.stream.matching}): its own entries keep their order
        and reach the receiver under a number no other copy used.
        """
        db = self._db
        old, new = self.stream, secrets.token_hex(8)
        with _transaction(db):
            db.execute("DELETE FROM entries WHERE COALESCE(last, seq) <= ?", (after,))
            # A gap that reaches across after keeps only its part after it.
            db.execute("UPDATE entries SET seq = ? WHERE seq <= ?", (after + 1, after))
            # Renumber through negative numbers, which no row holds: no two rows ever share one.
            db.execute("UPDATE entries SET seq = -(seq - ?), last = last - ?", (after, after))
            db.execute("UPDATE entries SET seq = -seq")
            self.stream, self.secret = new, secrets.token_hex(16)
            self._head, self._base = "", (0, "")
            self.acked = self._acked_saved = 0
            self.first = self.last = self.rows = 0
            carried = self._rechain()
            _set(db, "stream", self.stream)
            _set(db, "secret", self.secret)
            _set(db, "acked", "0")
            _set(db, "base", "0 ")
        return Forked(old, new, after, carried)

    def _rechain(self) -> int:
        """Give every entry its digest anew, oldest first; inside a transaction. Returns how many."""
        db = self._db
        count, after = 0, 0
        while True:
            rows = db.execute(_SELECT + "WHERE seq > ? ORDER BY seq LIMIT 5000", (after,)).fetchall()
            if not rows:
                break
            for row in rows:
                entry = self._from_row(row)
                self._head = link(self._head, self.incarnation, entry)
                db.execute("UPDATE entries SET digest = ? WHERE seq = ?", (self._head, entry.first))
                self.last = entry.last
                if not self.first:
                    self.first = entry.first
            count += len(rows)
            after = rows[-1][0]
        self.rows = count
        return count

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

    def digest_at(self, seq: int) -> str | None:
        """
        The chain's digest through the entry that ends at C{seq}, or C{None}
        where this journal cannot tell (no entry ends there, it was trimmed,
        or it was written by a version without digests). C{0}: the empty start.
        """
        if seq == 0:
            return ""
        if seq == self._base[0]:
            return self._base[1] or None
        row = self._db.execute(
            "SELECT seq, last, digest FROM entries WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (seq,)
        ).fetchone()
        if row is None or (row[1] if row[1] is not None else row[0]) != seq:
            return None
        return row[2] or None

    def covering(self, seq: int) -> tuple[int, int, str | None] | None:
        """
        The entry that covers C{seq}: C{(first, last, digest)}; the last one
        trimmed stands for everything up to it (C{(0, its seq, its digest)});
        C{None} beyond the journal's end or where it cannot tell.
        """
        if seq <= self._base[0]:
            return (0, self._base[0], self._base[1] or None) if seq == self._base[0] and seq else None
        row = self._db.execute(
            "SELECT seq, last, digest FROM entries WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (seq,)
        ).fetchone()
        if row is None:
            return None
        last = row[1] if row[1] is not None else row[0]
        return (row[0], last, row[2] or None) if seq <= last else None

    def readings_since(self, ts: str, limit: int) -> list[Reading]:
        """
        The newest C{limit} readings taken at or after C{ts} (the entries' ISO
        form), oldest first: a plot's history.
        """
        rows = self._db.execute(
            _SELECT + "WHERE last IS NULL AND ts >= ? ORDER BY seq DESC LIMIT ?", (ts, limit)
        ).fetchall()
        return [self._from_row(row) for row in reversed(rows)]

    def latest_per_sensor(self, before: str | None = None) -> dict[str, Reading]:
        """
        The newest reading of each sensor: a subscriber's snapshot; with C{before} (an
        entry's ISO time), of those taken before it (the state a plot's window starts in).
        """
        taken = "" if before is None else " AND ts < ?"
        rows = self._db.execute(
            _SELECT + f"WHERE seq IN (SELECT MAX(seq) FROM entries WHERE last IS NULL{taken} GROUP BY sensor)"
            " ORDER BY seq",
            () if before is None else (before,),
        ).fetchall()
        return {entry.sensor: entry for entry in map(self._from_row, rows)}

    def gaps(self) -> list[Gap]:
        rows = self._db.execute(_SELECT + "WHERE last IS NOT NULL ORDER BY seq").fetchall()
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

    def _entry_at(self, seq: int) -> Entry:
        return self._from_row(self._db.execute(_SELECT + "WHERE seq = ?", (seq,)).fetchone())

    def _from_row(self, row) -> Entry:
        seq, last, ts, synced, sensor, value, text, unit, reason, digest = row
        if last is not None:
            return Gap(stream=self.stream, first=seq, last=last, reason=reason, digest=digest or "")
        return Reading(
            stream=self.stream, seq=seq, ts=ts, synced=bool(synced), sensor=sensor, value=value, text=text,
            unit=unit, digest=digest or "",
        )  # fmt: skip


def _row(entry: Entry) -> tuple:
    if entry.__class__ is Gap:
        return (entry.first, entry.last, None, None, None, None, None, None, entry.reason, entry.digest)
    return (
        entry.seq, None, entry.ts, int(entry.synced), entry.sensor, entry.value, entry.text, entry.unit, None,
        entry.digest,
    )  # fmt: skip


class _transaction:
    """C{BEGIN IMMEDIATE} ... C{COMMIT}, or C{ROLLBACK} on an error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                if self._db.in_transaction:  # (a failed COMMIT, e.g. on a full disk, leaves it open)
                    self._db.execute("ROLLBACK")
                raise
        self._db.execute("ROLLBACK")


def _set(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def missing_entries(journal: Journal, gaps) -> list[dict]:
    """
    What a subscriber starting from the beginning will never get, oldest
    first: the entries before C{journal}'s first, then its gap entries
    (C{gaps}, from L{Journal.gaps}), each C{{"from", "to", "reason"}}.
    """
    missing = []
    if journal.first > 1:
        missing.append({"from": 1, "to": journal.first - 1, "reason": "trimmed"})
    missing.extend({"from": g.first, "to": g.last, "reason": g.reason} for g in gaps)
    return missing
