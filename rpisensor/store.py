"""
Where the collector keeps what reporters send: an embedded file, no server.

C{.jsonl} files get one JSON object a line; C{.sqlite} and C{.db} files get a
C{readings} table. Every record has the UTC time (ISO 8601), the peer's
address and the message. All file I/O happens in one writer thread, in
arrival order, so the reactor never waits on the disk.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool


@dataclass(frozen=True)
class Record:
    """One stored message."""

    time: str
    peer: str
    message: str


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
        if self._file is not None:
            self._file.close()
            self._file = None


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
        # Opened at start-up (so a bad path is a start-up error), then used
        # only by the writer thread.
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
        if self._db is not None:
            self._db.close()
            self._db = None


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


class StoreClosed(RuntimeError):
    """A record arrived after the store was closed."""


class StoreService(Service):
    """
    Writes records to an opened store file from one dedicated thread, in
    arrival order. Records appended in one reactor turn are written as one
    batch; L{append}'s Deferred fires once its record is written (or fails
    with the write's error).

    @param runner: runs blocking calls, C{runner(f, *args) -> Deferred}; by
        default the service's own one-thread pool. Tests pass a fake.
    """

    _log = Logger()

    def __init__(self, reactor, file: JsonLinesFile | SQLiteFile, runner=None) -> None:
        self.file = file
        self._reactor = reactor
        self._pool: ThreadPool | None = None
        if runner is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="rpisensor-store")
            runner = partial(deferToThreadPool, reactor, self._pool)
        self._run = runner
        self._batch: list[tuple[Record, Deferred]] = []
        self._flush_call = None

    def startService(self) -> None:
        super().startService()
        if self._pool is not None:
            self._pool.start()

    def append(self, record: Record) -> Deferred[None]:
        """Queue C{record}; the result fires once it is written."""
        if not self.running:
            return fail(StoreClosed(f"the store {self.file.path} is closed (the collector is stopping)"))
        d: Deferred[None] = Deferred()
        self._batch.append((record, d))
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> Deferred:
        self._flush_call = None
        batch, self._batch = self._batch, []
        written = self._run(self.file.write, [record for record, _ in batch])

        def done(result):
            for _, d in batch:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(None)

        return written.addBoth(done)

    def stopService(self) -> None:
        """Write what is queued, then close the file and stop the writer thread."""
        if not self.running:
            return
        super().stopService()
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()
        self._run(self.file.close)  # queued behind the writes, in the same thread
        if self._pool is not None:
            self._pool.stop()
