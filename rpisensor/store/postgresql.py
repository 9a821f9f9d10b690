"""
The PostgreSQL store: C{collect --store postgresql://user@host/db}, one
database for a fleet of collectors. The schema and every statement are in
L{rpisensor.store.pgsql}.

Exactly once by a per-stream watermark (C{streams.stored}): each batch, in
one transaction, locks its streams' rows, keeps only the entries above their
watermarks, COPYs the readings in and moves the watermarks; the commit is
what the collector acknowledges. Measured against C{INSERT ... ON CONFLICT
DO NOTHING} (bench/fleet.py, "W"), the watermark with COPY stored 2.9x as
many rows a second in batches of 5,000 and 1.8x in batches of 100, and lost
about 0.2 ms on a batch of one (one more round trip): the batches grow with
the load, so the watermark wins where it counts. It also answers where a
stream stands with one row, which is what a collector asks at each hello.

Entries that came through an MQTT broker (C{collect --mqtt}: their C{peer}
is the broker's URL) may come in any order: a shared subscription gives a
stream's messages to several collectors in turn, and a reading published
again after a lost ack can come after later ones. Such an entry, whose
predecessor is not stored yet, is stored all the same, above the watermark
(C{streams.ahead} is the highest seq stored there); the watermark moves over
it once the entries before it are stored, by whichever collector stores
them. An entry stored already (below the watermark, or above it) is skipped:
once by C{(device, stream, seq)}, whatever order. Entries from rpisensor's
own protocol come in order; one that would leave a hole is refused
(L{StreamBehind}).

Writes go through one connection in the store's writer thread (see
L{rpisensor.store.writer}), in arrival order. When PostgreSQL is away
(restarting, failing over) or refuses writes (a revoked privilege, a
read-only mode, a full disk), the batch is held in that thread and tried
again with backoff until it commits: nothing it holds is acknowledged
meanwhile, and the senders keep their readings. Where a stream stands is
asked on connections of their own (L{twisted.enterprise.adbapi}), so that a
reporter saying hello does not wait behind a held batch.

Blocking: L{PostgresStore}'s methods but L{PostgresStore.interrupt} run in
the writer thread (or at start, before the reactor runs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rpisensor.store import pgsql
from rpisensor.store.record import HighWaters, Record, Standing, StoredRecord
from rpisensor.store.writer import StoreOpenError, StoreService
from rpisensor.entries import Gap, Reading
from rpisensor.wire.v2 import format_timestamp, parse_timestamp

#: The peers of entries that came through an MQTT broker (its URL), which may come in any order.
BROKER_PEERS = ("mqtt://", "mqtts://")

#: URL schemes that name a PostgreSQL store.
SCHEMES = ("postgresql://", "postgres://")
#: Seconds a connection attempt may take (libpq's connect_timeout), unless the URL says.
CONNECT_TIMEOUT = 10
#: Waits between tries of a held batch: quick at first (a restart takes seconds), then every 5 s.
HOLD_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)

#: SQLSTATE classes and codes of errors that say "not now" rather than "not this":
#: the batch is held and tried again. Anything else fails the batch (its
#: senders send it again, and a bad entry says so in the log).
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")  # connection, rollback, resources, operator, system
_TRANSIENT_CODES = ("25006", "42501", "55P03", "55006")  # read-only, privilege, lock, object in use


def is_postgresql(path: str) -> bool:
    """Whether a C{--store} value names a PostgreSQL database."""
    return path.lower().startswith(SCHEMES)


class PostgresURLError(ValueError):
    """A C{postgresql://} URL this store will not use; the message says why."""


def check_url(url: str) -> dict[str, str]:
    """
    The connection parameters of C{url}, checked.

    @raise PostgresURLError: it is not a URL libpq reads, or it carries a
        password: a command line is visible to every user of the machine
        (C{ps}), so the password comes from a file instead.
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception as e:  # psycopg.ProgrammingError: libpq's own message
        raise PostgresURLError(f"{url!r} is not a PostgreSQL URL libpq can read: {e}") from None
    if "password" in params:
        raise PostgresURLError(
            "a password in the URL would be visible to every user of this machine (ps): leave it "
            "out, and put it in a password file: ~/.pgpass, the file PGPASSFILE names, or "
            "postgresql://user@host/db?passfile=PATH (one line host:port:db:user:password, mode "
            "0600); or name a service from a service file (postgresql:///?service=NAME)"
        )
    return params


def is_transient(error: Exception) -> bool:
    """Whether PostgreSQL said "not now" (the batch is held) rather than "not this"."""
    import psycopg

    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)) and not error.sqlstate:
        return True  # the connection failed or is gone
    code = getattr(error, "sqlstate", None) or ""
    return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES


class StreamBehind(Exception):
    """
    A batch would leave a hole: its first entry of a stream comes after more
    than one past the stream's watermark in the database (a database restored
    from an older backup, or a watermark lowered by hand). Refused: the
    sender is told, reconnects, and resumes from the database's watermark.
    """


def _reading_row(r: Reading) -> tuple:
    return (
        r.device, r.stream, r.seq, parse_timestamp(r.ts), r.synced, r.sensor, float(r.value), r.unit,
        r.text, r.peer, parse_timestamp(r.received), r.identity, r.digest or None,
    )  # fmt: skip


def _gap_row(g: Gap, first: int) -> tuple:
    # (A gap cut short by the watermark keeps its digest: the chain's value through its last seq.)
    return (g.device, g.stream, first, g.last, g.reason, g.peer, parse_timestamp(g.received), g.identity,
            g.digest or None)  # fmt: skip


class PostgresStore:
    """
    The store's file-like face for a PostgreSQL database: L{open},
    L{write}, L{close}, C{high_waters}, as L{rpisensor.store.SQLiteFile}.

    @param url: a C{postgresql://} URL without a password (see L{check_url}).
    @param timescale: make C{readings} a TimescaleDB hypertable (the
        extension must be available in the server).
    @param say: how the writer thread's log lines reach the log:
        C{say(level, format, **fields)}, called in the writer thread; by
        default through the reactor's thread.
    @ivar path: the URL, as messages name the store.
    @ivar high_waters: every stream's watermark when the store was opened.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        timescale: bool = False,
        say: Callable[..., None] | None = None,
        delays: Sequence[float] = HOLD_DELAYS,
    ) -> None:
        self.params = check_url(url)
        self.params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        self.params.setdefault("application_name", "rpisensor collect")
        self.url = url
        self.path = url  # (it has no password: see check_url)
        self.timescale = timescale
        self.high_waters: HighWaters = {}
        self._delays = tuple(delays)
        self._say = say or self._say_in_reactor
        self._connection = None
        self._interrupted = threading.Event()
        self._devices: set[str] = set()

    def _say_in_reactor(self, level: str, format: str, **fields) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(getattr(self._log, level), format, **fields)

    def connect(self):
        """(Blocking.) A new connection; transactions are explicit (C{connection.transaction()})."""
        import psycopg

        return psycopg.connect(autocommit=True, **self.params)

    # -- at start -------------------------------------------------------------

    def open(self) -> None:
        """
        Connect, make the tables (and the hypertable) if missing, read the
        watermarks. Any failure here is a start-up error.
        """
        connection = self.connect()
        try:
            with connection.transaction():
                connection.execute(pgsql.SCHEMA_LOCK)
                for statement in pgsql.SCHEMA:
                    connection.execute(statement)
                if self.timescale:
                    self._make_hypertable(connection)
            self.high_waters = {(d, s): stored for d, s, stored in connection.execute(pgsql.WATERMARKS)}
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _make_hypertable(self, connection) -> None:
        import psycopg

        if connection.execute(pgsql.TIMESCALE_AVAILABLE).fetchone() is None:
            raise psycopg.errors.FeatureNotSupported(
                "--timescale: the TimescaleDB extension is not installed in this PostgreSQL server "
                "(install it, e.g. the timescaledb-2-postgresql-NN package from Timescale, and add "
                "timescaledb to shared_preload_libraries), or leave --timescale out for plain tables"
            )
        for statement in pgsql.TIMESCALE:
            connection.execute(statement)

    # -- in the writer thread ----------------------------------------------

    def write(self, records: Sequence[StoredRecord]) -> None:
        """
        Store C{records} in one transaction; return once it has committed.
        While PostgreSQL is away or refuses writes, hold them and try again
        (see L{HOLD_DELAYS}) until it commits or the store is interrupted.

        @raise StreamBehind: the batch would leave a hole in a stream.
        @raise psycopg.Error: PostgreSQL refused the batch itself (a bad
            entry), or was still away when the store was interrupted.
        """
        tries = 0
        since = None
        while True:
            try:
                self._write_once(records)
            except Exception as e:
                if not is_transient(e) or self._interrupted.is_set():
                    self._drop_broken()
                    raise
                # The next try on a new connection: a session made read-only, or one to a
                # server that was demoted, stays so (and a URL naming several hosts with
                # target_session_attrs=read-write finds the new primary).
                self._drop()
                if since is None:
                    since = time.monotonic()
                    self._say(
                        "error",
                        "PostgreSQL does not take writes now ({error}): holding {count} entries "
                        "without acknowledging them, and trying again until it does. The senders keep "
                        "their readings meanwhile. Check that the server at {url} is up, writable (not "
                        "read-only, disk not full) and that this role may INSERT into readings, gaps, "
                        "messages and devices, and UPDATE streams.",
                        error=_one_line(e), count=len(records), url=self.path,
                    )  # fmt: skip
                delay = self._delays[min(tries, len(self._delays) - 1)]
                tries += 1
                self._interrupted.wait(delay)
                continue
            if since is not None:
                self._say(
                    "info",
                    "PostgreSQL takes writes again: stored the {count} entries held for {seconds:.1f} s; "
                    "acknowledging them now.",
                    count=len(records), seconds=time.monotonic() - since,
                )  # fmt: skip
            return

    def _drop_broken(self) -> None:
        connection = self._connection
        if connection is not None and (connection.broken or connection.closed):
            self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _connected(self):
        if self._connection is None:
            self._connection = self.connect()
            self._devices.clear()
        return self._connection

    def _write_once(self, records: Sequence[StoredRecord]) -> None:
        connection = self._connected()
        streams = [r for r in records if r.__class__ is not Record]
        devices = {r.device for r in streams} - self._devices
        with connection.transaction():
            if devices:
                connection.execute(pgsql.NEW_DEVICES, [sorted(devices)])
            if streams:
                self._write_streams(connection, streams)
            messages = [(parse_timestamp(r.time), r.peer, r.message) for r in records if r.__class__ is Record]
            if messages:
                connection.cursor().executemany(pgsql.INSERT_MESSAGES, messages)
        self._devices.update(devices)

    def _write_streams(self, connection, records: list) -> None:
        streams: dict[tuple[str, str], list] = {}
        for record in records:
            streams.setdefault((record.device, record.stream), []).append(record)
        keys = sorted(streams)
        devices = [k[0] for k in keys]
        names = [k[1] for k in keys]
        marks = {(d, s): (stored, ahead) for d, s, stored, ahead in connection.execute(
            pgsql.LOCK_STREAMS, [devices, names])}  # fmt: skip
        readings: list[tuple] = []
        gaps: list[tuple] = []
        moved = {}
        for key in keys:
            mark, ahead = marks[key]
            run = streams[key]
            if run[0].peer.startswith(BROKER_PEERS):
                run.sort(key=_first)
            else:
                ahead = self._check_behind(connection, key, run, mark, ahead)
            if ahead > mark:
                moved[key] = self._store_around(connection, key, run, mark, readings, gaps)
            else:
                moved[key] = self._store_in_order(connection, key, run, mark, readings, gaps)
        if readings:
            with connection.cursor().copy(pgsql.COPY_READINGS) as copy:
                copy.set_types(pgsql.READING_TYPES)
                for row in readings:
                    copy.write_row(row)
        if gaps:
            connection.cursor().executemany(pgsql.INSERT_GAPS, gaps)
        changed = [k for k in keys if moved[k] != marks[k]]
        if changed:
            connection.execute(pgsql.MOVE_STREAMS, [
                [k[0] for k in changed], [k[1] for k in changed], [moved[k][0] for k in changed],
                [moved[k][1] for k in changed],
            ])  # fmt: skip

    def _check_behind(self, connection, key: tuple[str, str], run: list, mark: int, ahead: int) -> int:
        """
        Entries of rpisensor's own protocol come in order: refuse a batch
        whose first new entry leaves a hole after the watermark (and after
        what is stored above it). Returns C{ahead}, or past the first new
        entry where that is further (the batch then goes L{_store_around}).
        """
        first = next((r.first for r in run if r.last > mark), None)
        if first is None or first <= mark + 1:
            return ahead
        if ahead > mark:
            reach = _reach(mark, connection.execute(pgsql.AHEAD, _stream_key(key, mark)).fetchall())
            if first <= reach + 1:
                return ahead
        else:
            reach = mark
        raise StreamBehind(
            f"stream {key[1]} of device {key[0]}: entry {first} would follow entry {reach}, "
            f"the last the database holds without a hole (entries {reach + 1} to {first - 1} are not "
            "there: was the database restored from an older backup?); the sender is asked to send "
            f"from {mark + 1}"
        )

    @staticmethod
    def _store_in_order(connection, key, run: list, mark: int, readings: list, gaps: list) -> tuple[int, int]:
        """
        Nothing stored above the watermark: the entries that follow it without
        a hole go in, the watermark after them; the rest (come early through
        a broker) L{_store_around} it. Returns C{(watermark, ahead)}.
        """
        for n, record in enumerate(run):
            last = record.last
            if last <= mark:
                continue  # stored already (by this collector or another)
            first = record.first
            if first > mark + 1:
                return PostgresStore._store_around(connection, key, run[n:], mark, readings, gaps)
            if record.__class__ is Reading:
                readings.append(_reading_row(record))
            else:
                gaps.append(_gap_row(record, max(first, mark + 1)))
            mark = last
        return mark, 0

    @staticmethod
    def _store_around(connection, key, run: list, mark: int, readings: list, gaps: list) -> tuple[int, int]:
        """
        Entries that may come before the ones they follow (sorted by seq):
        each not stored yet goes in, wherever it falls; the watermark moves
        over what is then stored without a hole after it. Returns
        C{(watermark, ahead)}.
        """
        held = connection.execute(pgsql.AHEAD, _stream_key(key, mark)).fetchall()
        seqs = {first for first, last in held if first == last}
        spans = [(first, last) for first, last in held if last > first]
        starts = {first for first, _ in spans}
        entries = list(held)
        for record in run:
            first, last = record.first, record.last
            if last <= mark:
                continue
            if record.__class__ is Reading:
                if first in seqs or any(f <= first <= t for f, t in spans):
                    continue  # stored already, or inside a gap stored already
                seqs.add(first)
                readings.append(_reading_row(record))
            else:
                first = max(first, mark + 1)
                if first in starts:
                    continue
                starts.add(first)
                gaps.append(_gap_row(record, first))
            entries.append((first, last))
        stored = _reach(mark, entries)
        return stored, max((last for _, last in entries if last > stored), default=0)

    def interrupt(self) -> None:
        """
        (Any thread.) Stop holding: a held batch fails at its next try
        instead of waiting on (the store is closing; its senders keep it).
        """
        self._interrupted.set()

    def close(self) -> None:
        self._drop()


def _first(record) -> int:
    return record.first


def _stream_key(key: tuple[str, str], after: int) -> dict:
    return {"device": key[0], "stream": key[1], "after": after}


def _reach(mark: int, entries) -> int:
    """How far a stream is stored without a hole from C{mark} on, given C{entries} (first, last) above it."""
    for first, last in sorted(entries):
        if first > mark + 1:
            break
        mark = max(mark, last)
    return mark


def watermark(cursor, device: str, stream: str) -> int:
    """(Blocking.) The watermark of C{(device, stream)} through C{cursor}; 0 for a stream not seen."""
    cursor.execute(pgsql.WATERMARK, (device, stream))
    row = cursor.fetchone()
    return row[0] if row is not None else 0


def entry(cursor, device: str, stream: str, seq: int) -> tuple[int, int, str | None] | None:
    """
    (Blocking.) The entry of C{(device, stream)} covering C{seq}: a reading
    or a gap, as C{(first, last, digest)}; C{None} if none covers it.
    """
    cursor.execute(pgsql.ENTRY, {"device": device, "stream": stream, "seq": seq})
    row = cursor.fetchone()
    return tuple(row) if row is not None else None


def standing(cursor, device: str, stream: str) -> Standing:
    """(Blocking.) Where C{(device, stream)} stands: its watermark, the digest through it, its owner."""
    cursor.execute(pgsql.STANDING, (device, stream))
    row = cursor.fetchone()
    if row is None:
        return Standing()
    stored, owner = row
    at = entry(cursor, device, stream, stored) if stored else None
    return Standing(stored, at[2] if at is not None and at[1] == stored else None, owner)


def claim(cursor, device: str, stream: str, owner: str, when: str) -> str:
    """(Blocking.) Record C{owner} as C{(device, stream)}'s, unless it has one; return the one it has now."""
    cursor.execute(pgsql.CLAIM, (device, stream, owner))
    return cursor.fetchone()[0]


def _one_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def _quiet_connection():
    from twisted.enterprise import adbapi

    class QuietConnection(adbapi.Connection):
        """
        adbapi's connection wrapper for autocommit connections: after a failed
        lookup there is nothing to roll back, and a connection that broke (the
        server restarted) is dropped without a word, the next lookup making a
        new one. (adbapi's own logs two tracebacks, "Rollback failed", for what
        the lookup's error already says.)
        """

        def rollback(self):
            connection = self._connection
            if connection is not None and (connection.broken or connection.closed):
                self._pool.disconnect(connection)
                self._connection = None

    return QuietConnection


class PositionLookups:
    """
    Where streams stand, asked on connections of their own through
    L{twisted.enterprise.adbapi} (a thread each, reconnecting after
    PostgreSQL restarts), so that the answer never waits behind a batch the
    writer holds.
    """

    def __init__(self, reactor, store: PostgresStore, connections: int = 2) -> None:
        from twisted.enterprise import adbapi

        self._pool = adbapi.ConnectionPool(
            "psycopg", cp_min=1, cp_max=connections, cp_reconnect=True, cp_noisy=False, cp_reactor=reactor,
            autocommit=True, **store.params,
        )  # fmt: skip
        self._pool.connectionFactory = _quiet_connection()

    def start(self) -> None:
        self._pool.start()

    def position(self, device: str, stream: str) -> Deferred[int]:
        return self._pool.runInteraction(watermark, device, stream)

    def entry(self, device: str, stream: str, seq: int) -> Deferred[tuple[int, int, str | None] | None]:
        return self._pool.runInteraction(entry, device, stream, seq)

    def standing(self, device: str, stream: str) -> Deferred[Standing]:
        return self._pool.runInteraction(standing, device, stream)

    def claim(self, device: str, stream: str, owner: str, when: str) -> Deferred[str]:
        return self._pool.runInteraction(claim, device, stream, owner, when)

    def close(self) -> None:
        self._pool.close()


class PostgresStoreService(StoreService):
    """
    The L{StoreService} of a L{PostgresStore}: batches written in order by
    its writer thread, and where a stream stands asked on connections of
    their own (L{PositionLookups}). At a stop, a batch held while PostgreSQL
    is away is given up (unacknowledged: its senders send it again).
    """

    file: PostgresStore
    shared = True

    def __init__(self, reactor, file: PostgresStore, **kwargs) -> None:
        super().__init__(reactor, file, **kwargs)
        self._lookups = PositionLookups(reactor, file)

    def startService(self) -> None:
        """
        @raise StoreOpenError: PostgreSQL cannot be reached or refused to make
            the tables; the message says which database and why, in one line.
        """
        import psycopg

        try:
            super().startService()
        except psycopg.Error as e:
            raise StoreOpenError(f"rpisensor: cannot open the store {self.file.path}: {_one_line(e)}") from None
        self._lookups.start()

    def position(self, device: str, stream: str) -> Deferred[int]:
        return self._lookups.position(device, stream)

    def entry(self, device: str, stream: str, seq: int) -> Deferred[tuple[int, int, str | None] | None]:
        """The entry of C{(device, stream)} covering C{seq}: C{(first, last, digest)}, or C{None}."""
        return self._lookups.entry(device, stream, seq)

    def standing(self, device: str, stream: str) -> Deferred[Standing]:
        return self._lookups.standing(device, stream)

    def claim(self, device: str, stream: str, owner: str) -> Deferred[str]:
        return self._lookups.claim(device, stream, owner, format_timestamp(time.time()))

    def stopService(self) -> Deferred[None]:
        self.file.interrupt()
        stopped = super().stopService()
        self._lookups.close()
        return stopped
