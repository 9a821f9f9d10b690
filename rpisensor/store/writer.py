"""
Where the collector keeps what reporters send: an embedded file, no server.

All file I/O happens in one writer thread, in arrival order, so the reactor
never waits on the disk.
"""

from __future__ import annotations

from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from rpisensor.store.files import JsonLinesFile, SQLiteFile
from rpisensor.store.record import Record


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
