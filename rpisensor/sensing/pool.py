"""
The read thread pool: a small pool of the reader's own (not the reactor's
default pool, which also resolves host names), started and stopped as a
service that also releases the GPIO channels.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from rpisensor.hw.interfaces import IGPIOBackend
from rpisensor.sensing.inputs import InputSpec
from rpisensor.sensing.reader import InputReader, Runner


def _daemon_thread(*args, **kwargs) -> threading.Thread:
    # A read stuck in a driver must not keep the process alive at exit.
    return threading.Thread(*args, daemon=True, **kwargs)


class ReadPoolService(Service):
    """
    Owns the read thread pool and the GPIO channels for the life of the service:
    the pool starts with the service. On stop, reads in flight may finish (for
    up to the read timeout, without blocking the reactor); then the pool stops
    and the channels this process set up are released. A read still running
    after that is left to end with the process, and its channels with it.

    @param threads: largest number of worker threads; one serialises all GPIO
        access, which is what real pins want.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorThreads, threads: int = 1) -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="rpisensor-reads")
        self.pool.threadFactory = _daemon_thread
        self.runner: Runner = partial(deferToThreadPool, reactor, self.pool)
        self._reader: InputReader | None = None

    def lend_thread(self, change: int) -> None:
        """Grow (+1) or shrink (-1) the pool while a read is stuck in a thread."""
        self.pool.adjustPoolsize(self.pool.min, self.pool.max + change)
        if change > 0:
            # A larger limit alone starts no worker for jobs already queued
            # behind the stuck one; a new job does, and it takes them first.
            self.pool.callInThread(_nothing)

    def attach(self, reader: InputReader) -> None:
        """Release C{reader}'s channels when this service stops."""
        self._reader = reader

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        reader = self._reader
        if reader is None:
            self.pool.stop()
            return
        reader.flush_now()
        deadline = self._reactor.seconds() + reader.read_timeout
        while reader.jobs_in_flight and self._reactor.seconds() < deadline:
            await deferLater(self._reactor, 0.02, _nothing)
        if reader.jobs_in_flight:
            self._log.warn(
                "Not waiting for a read that is still running ({names}): its thread and the "
                "GPIO channels are released when the process ends.",
                names=", ".join(reader.stuck) or "a read past the timeout",
            )
            return
        self.pool.stop()  # idle now: returns at once
        reader.backend.cleanup()
        self._log.info("Released the GPIO channels this process set up.")


def _nothing() -> None:
    pass


def open_reader(
    reactor,
    backend: IGPIOBackend,
    inputs: Sequence[InputSpec],
    threads: int = 1,
    max_age: float = 0.0,
    read_timeout: float = 10.0,
) -> tuple[InputReader, ReadPoolService]:
    """
    An L{InputReader} for C{inputs} with its channels set up now, and the
    service that runs its reads and releases the channels when it stops.
    Start the service (or give it a parent) before reads can finish.

    @raise rpisensor.hw.GPIOError: the backend cannot set up an input.
    """
    service = ReadPoolService(reactor, threads=threads)
    reader = InputReader(
        backend, inputs, service.runner, reactor, max_age, read_timeout, service.lend_thread
    )
    reader.setup()
    service.attach(reader)
    return reader, service
