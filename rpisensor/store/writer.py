"""
Where the collector keeps what reporters send: an embedded file, no server.

All file I/O after the open happens in one writer thread, in arrival order,
so the reactor never waits on the disk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from rpisensor.store.jsonl import JsonLinesFile
from rpisensor.store.opening import open_error
from rpisensor.store.record import HighWaters, Record, Span, Standing, StoredRecord
from rpisensor.store.sqlite import SQLiteFile
from rpisensor.wire.v2 import format_timestamp

#: Seconds a stop waits for the writer thread to write what is queued and
#: close the file; past that (a hung disk) the process ends without it.
STOP_TIMEOUT = 10.0


class StoreClosed(RuntimeError):
    """A record arrived after the store was closed."""


class StoreOpenError(SystemExit, Exception):
    """
    The store file cannot be opened when the collector starts. Its message is
    one line naming the file and the reason.

    Both kinds on purpose, since it is raised from C{startService}, where
    twistd has no start-up error of its own: as an L{Exception} it is caught
    by twistd's daemonizing child, which sends it to the waiting parent to
    print (without that the parent learns nothing); as a L{SystemExit} it
    ends a C{twistd -n} with just its message, no traceback.
    """


def _daemon_thread(*args, **kwargs) -> threading.Thread:
    # A write stuck on a hung disk must not keep the process alive at exit.
    return threading.Thread(*args, daemon=True, **kwargs)


def write_groups(file, groups: list[list[StoredRecord]]) -> list[Exception | None]:
    """
    Write C{groups} (each one sender's records, in order) as one batch: one
    commit, one fsync. Blocking: in the writer thread.

    If the batch fails, each group is written alone, so that one sender's
    entry the file refuses (or a moment of a full disk) fails only that
    sender's records; a sender's groups after one of its own that failed are
    not written (they would land behind a hole).

    @return: for each group, C{None} once it is written, or the error that
        kept it out of the file.
    """
    try:
        file.write([record for group in groups for record in group])
        return [None] * len(groups)
    except Exception as e:
        if len(groups) == 1:
            return [e]
    outcomes: list[Exception | None] = []
    failed: dict[tuple, Exception] = {}
    for group in groups:
        senders = _senders(group)
        error = next((failed[key] for key in senders if key in failed), None)
        if error is None:
            try:
                file.write(group)
            except Exception as e:
                error = e
        if error is not None:
            failed.update(dict.fromkeys(senders, error))
        outcomes.append(error)
    return outcomes


def _senders(records: list[StoredRecord]) -> set[tuple]:
    """Whose records these are: each v2 stream, or the peer of v1 messages."""
    return {("peer", r.peer) if isinstance(r, Record) else (r.device, r.stream) for r in records}


def _per_group(outcomes, batch) -> list:
    """The writer thread's outcomes, one per group; a failure of the call itself fails every group."""
    if isinstance(outcomes, Failure):
        return [outcomes] * len(batch)
    return outcomes


class StoreService(Service):
    """
    Writes records to a store file from one dedicated thread, in arrival
    order. Records appended in one reactor turn, or while the batch before
    is being written, are written as one batch (one commit, one fsync);
    L{append}'s Deferred fires once its record is written (or fails with the
    write's error): for a v2 stream that is when its receiver may acknowledge it.
    A batch that fails is written again group by group (L{write_groups}): one
    sender's bad entry never fails another's.

    The file is opened when the service starts: under twistd that is after
    it has daemonized (an SQLite connection must not cross a fork) and after
    C{--uid} has dropped privileges (so the file belongs to that user). The
    open is a blocking call in the reactor's thread, made before the reactor
    runs, so that a bad path stops the program at start-up.

    @param runner: runs blocking calls, C{runner(f, *args) -> Deferred}; by
        default the service's own one-thread pool. Tests pass a fake.
    @param stop_timeout: seconds L{stopService} waits for the queued writes
        and the close (see L{STOP_TIMEOUT}).
    @ivar pool: the writer thread's pool; C{None} with an injected runner.
    """

    _log = Logger()
    #: Whether other processes write to the same store (a database server):
    #: then where a stream stands must be asked (L{position}), not remembered.
    shared = False

    def __init__(
        self,
        reactor,
        file: JsonLinesFile | SQLiteFile,
        runner=None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.file = file
        self._reactor = reactor
        self.stop_timeout = stop_timeout
        self.pool: ThreadPool | None = None
        if runner is None:
            self.pool = ThreadPool(minthreads=1, maxthreads=1, name="rpisensor-store")
            self.pool.threadFactory = _daemon_thread
            runner = partial(deferToThreadPool, reactor, self.pool)
        self._run = runner
        self._batch: list[tuple[list[StoredRecord], Deferred]] = []
        self._flush_call = None
        #: The write in the writer thread now, if any: the next batch waits for it.
        self._writing: Deferred | None = None

    def startService(self) -> None:
        """
        Open the file, then start the writer thread.

        @raise StoreOpenError: the file cannot be opened; the message says
            which and why, in one line.
        """
        try:
            self.file.open()
        except (OSError, sqlite3.Error) as e:
            raise StoreOpenError(
                f"rpisensor: cannot open the store {self.file.path}: {open_error(self.file.path, e)}"
            ) from None
        self._log.info("Appending messages to {path}", path=str(self.file.path))
        super().startService()
        if self.pool is not None:
            self.pool.start()

    def high_waters(self) -> HighWaters:
        """The highest seq stored of each stream when the file was opened (see L{HighWaters})."""
        return dict(self.file.high_waters)

    def position(self, device: str, stream: str) -> Deferred[int]:
        """
        Where C{(device, stream)} stands in the store now: the highest seq
        stored (0: none), asked after the writes queued before it. A receiver
        asks at each hello, since another collector sharing the store may have
        stored more of the stream than this one remembers.
        """
        return self._run(self.file.position, device, stream)

    def standing(self, device: str, stream: str) -> Deferred[Standing]:
        """
        Where C{(device, stream)} stands in the store now (L{Standing}: every
        entry up to which is stored, the digest through it, its owner), asked
        after the writes queued before it. A receiver asks at each hello.
        """
        return self._run(self.file.standing, device, stream)

    def entry(self, device: str, stream: str, seq: int) -> Deferred[Span | None]:
        """The stored entry of C{(device, stream)} covering C{seq}: C{(first, last, digest)}, or C{None}."""
        return self._run(self.file.entry, device, stream, seq)

    def claim(self, device: str, stream: str, owner: str) -> Deferred[str]:
        """Record C{owner} as C{(device, stream)}'s unless it has one; fires with the one it has now."""
        return self._run(self.file.claim, device, stream, owner, format_timestamp(time.time()))

    @property
    def waiting(self) -> int:
        """Records queued for the next write (the metrics' outbox depth)."""
        return len(self._batch)

    def append(self, record: StoredRecord) -> Deferred[None]:
        """Queue C{record}; the result fires once it is written (for a stream entry: durably)."""
        return self.append_many([record])

    def append_many(self, records: list[StoredRecord]) -> Deferred[None]:
        """Queue C{records}, in order; the result fires once all are written, in the same batch."""
        if not self.running:
            return fail(StoreClosed(f"the store {self.file.path} is closed (the collector is stopping)"))
        d: Deferred[None] = Deferred()
        self._batch.append((records, d))
        if self._flush_call is None and self._writing is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        """
        Write what is queued as one batch (one commit, one fsync). While it is
        being written, new records wait, and go in the next batch together:
        the slower the disk, the larger the batches.
        """
        self._flush_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        self._writing = self._run(write_groups, self.file, [records for records, _ in batch])
        self._writing.addBoth(self._written, batch)

    def _written(self, outcomes, batch) -> None:
        self._writing = None
        outcomes = _per_group(outcomes, batch)
        failed = {key: error for (records, _), error in zip(batch, outcomes) if error is not None
                  for key in _senders(records)}
        if failed and self._batch:
            # What a failed sender queued while the write ran fails with it, unwritten: a
            # stream's later entries must not land behind a hole (its receiver would
            # count them stored, a JSON Lines file would skip the hole's replay). That
            # sender sends it all again, from what was acknowledged; the others' wait.
            waiting, self._batch = self._batch, []
            for records, d in waiting:
                error = next((failed[key] for key in _senders(records) if key in failed), None)
                if error is None:
                    self._batch.append((records, d))
                else:
                    batch.append((records, d))
                    outcomes.append(error)
        self._deliver(outcomes, batch)
        if self._batch and self._flush_call is None and self.running:
            self._flush_call = self._reactor.callLater(0, self._flush)

    @staticmethod
    def _deliver(outcomes, batch) -> None:
        for (_, d), error in zip(batch, _per_group(outcomes, batch)):
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    def stopService(self) -> Deferred[None]:
        """
        Write what is queued, then close the file and stop the writer thread,
        without blocking the reactor. Fires once the file is closed, or after
        C{stop_timeout} seconds if the disk does not answer (the thread is then
        left to end with the process). A failed close is logged, not raised.
        """
        if not self.running:
            return succeed(None)
        super().stopService()
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        batch, self._batch = self._batch, []
        if batch:  # queued behind a write in flight, if any: one thread, in order
            self._run(write_groups, self.file, [group for group, _ in batch]).addBoth(self._deliver, batch)
        closed = self._run(self.file.close)  # in the same thread, after the writes
        return Deferred.fromCoroutine(self._stopped(closed))

    async def _stopped(self, closed: Deferred) -> None:
        try:
            await closed.addTimeout(self.stop_timeout, self._reactor)
        except TimeoutError:
            self._log.error(
                "The store {path} did not finish writing within {timeout} s (is the disk hung?). "
                "Not waiting any longer: messages not yet written may be lost.",
                path=str(self.file.path),
                timeout=self.stop_timeout,
            )
            return  # stopping the pool would wait for the hung thread
        except Exception as e:
            self._log.error(
                "Closing the store {path} failed: {error}. The last messages may not be on "
                "disk; check the disk and the store file.",
                path=str(self.file.path),
                error=str(e) or type(e).__name__,
            )
        if self.pool is not None:
            self.pool.stop()  # idle now: its thread ends at once
