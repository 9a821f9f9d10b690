"""
The read thread pools: a small pool of the reader's own for the pins (not
the reactor's default pool, which also resolves host names), and one thread
per measurement sensor, started and stopped as a service that also releases
the GPIO channels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.python.threadpool import ThreadPool

from rpisensor.hw.interfaces import IGPIOBackend
from rpisensor.hw.select import BackendChoice
from rpisensor.sensing.inputs import InputSpec, describe_inputs
from rpisensor.sensing.measure import MeasurementSpec
from rpisensor.sensing.reader import InputReader, Runner


def _daemon_thread(*args, **kwargs) -> threading.Thread:
    # A read stuck in a driver must not keep the process alive at exit.
    return threading.Thread(*args, daemon=True, **kwargs)


class ReadPoolService(Service):
    """
    Owns the read thread pool and the GPIO channels for the life of the service:
    the pool starts with the service, which logs the backend and the inputs in
    use. On stop, reads running or queued may finish (each within the read
    timeout from when it began; reads already stuck past it are not waited
    for); then the channels this process set up are released, in a pool
    thread since releasing them may block, and the pool stops. If a read is
    still stuck, the pool and the channels are left to end with the process.

    @param threads: largest number of worker threads; one serialises all GPIO
        access, which is what real pins want.
    @param backend_choice: which backend C{--gpio} gave and why, for the
        start-up line; without it the line names the backend only.
    @param sensor_threads: threads of the measurement sensors' own pool (one
        per sensor: at most one read of a sensor runs at a time, so a slow or
        hung sensor holds only its own thread, and no pin read waits behind a
        conversion); 0: no such pool.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        threads: int = 1,
        backend_choice: BackendChoice | None = None,
        sensor_threads: int = 0,
    ) -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="rpisensor-reads")
        self.pool.threadFactory = _daemon_thread
        self.runner: Runner = partial(deferToThreadPool, reactor, self.pool)
        self.sensor_pool: ThreadPool | None = None
        self.sensor_runner: Runner | None = None
        if sensor_threads:
            self.sensor_pool = ThreadPool(minthreads=0, maxthreads=sensor_threads, name="rpisensor-sensors")
            self.sensor_pool.threadFactory = _daemon_thread
            self.sensor_runner = partial(deferToThreadPool, reactor, self.sensor_pool)
        self._reader: InputReader | None = None
        self._choice = backend_choice

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
        if self.sensor_pool is not None:
            self.sensor_pool.start()
        if self._reader is not None:
            self._announce(self._reader)

    def _announce(self, reader: InputReader) -> None:
        """One line: which pins are read, why those, and every input's wiring."""
        backend = reader.backend
        inputs = describe_inputs(reader.inputs.values(), backend.numbering)
        choice = self._choice
        if choice is not None and choice.fallback:
            self._log.emit(
                LogLevel.warn,
                "Using SIMULATED pins: {why}. Readings are not from hardware; pass --gpio rpi "
                "to insist on real pins. Inputs: {inputs}.",
                why=choice.why,
                inputs=inputs,
            )
            self._announce_sensors(reader)
            return
        pins = "real pins (RPi.GPIO)" if backend.name == "rpi" else "simulated pins"
        self._log.info(
            "Using {pins}{why}. Inputs: {inputs}.",
            pins=pins,
            why="" if choice is None else f" ({choice.why})",
            inputs=inputs,
        )
        self._announce_sensors(reader)

    def _announce_sensors(self, reader: InputReader) -> None:
        if reader.sensors:
            self._log.info(
                "Measuring {sensors}, each read in a thread of its own.",
                sensors="; ".join(spec.describe() for spec in reader.sensors.values()),
            )

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        reader = self._reader
        if reader is not None:
            await reader.when_settled()
            stuck_sensors = [name for name in reader.stuck if name in reader.sensors]
            if reader.jobs_in_flight and (self.sensor_pool is None or len(stuck_sensors) < len(reader.stuck)):
                self._log.warn(
                    "Not waiting for the stuck read of {names}: its thread and the GPIO "
                    "channels are released when the process ends.",
                    names=", ".join(reader.stuck),
                )
                return  # stopping the pool would wait for the stuck thread
            if stuck_sensors:  # in their own threads: the pins are released all the same
                self._log.warn(
                    "Not waiting for the stuck read of sensor {names}: its thread ends with the process.",
                    names=", ".join(stuck_sensors),
                )
            try:
                await self.runner(reader.backend.cleanup)
            except Exception as e:
                self._log.error(
                    "Could not release the GPIO channels: {error}. They are released when "
                    "the process ends.",
                    error=str(e) or type(e).__name__,
                )
            else:
                self._log.info("Released the GPIO channels this process set up.")
        self.pool.stop()  # idle now: its threads end at once
        if self.sensor_pool is not None and not (reader is not None and reader.stuck):
            self.sensor_pool.stop()  # stopping it would wait for a stuck sensor's thread


def _nothing() -> None:
    pass


def open_reader(
    reactor,
    backend: IGPIOBackend,
    inputs: Sequence[InputSpec],
    threads: int = 1,
    max_age: float = 0.0,
    read_timeout: float = 10.0,
    backend_choice: BackendChoice | None = None,
    sensors: Sequence[MeasurementSpec] = (),
    wall: Callable[[], float] = time.time,
) -> tuple[InputReader, ReadPoolService]:
    """
    An L{InputReader} for C{inputs} with its channels set up now, and the
    service that runs its reads and releases the channels when it stops.
    Start the service (or give it a parent) before reads can finish.

    Set-up happens here, in the calling thread, unlike every later call on
    the backend: a role calls this while building its service, before the
    reactor runs, so blocking delays nothing else; a bad pin or missing
    hardware stops the program before anything listens; and the GPIO device
    is opened while twistd still has the privileges that C{--uid} drops (the
    mapping RPi.GPIO makes is inherited across twistd's fork).

    @raise rpisensor.hw.GPIOError: the backend cannot set up an input.
    """
    service = ReadPoolService(reactor, threads=threads, backend_choice=backend_choice, sensor_threads=len(sensors))
    reader = InputReader(
        backend, inputs, service.runner, reactor, max_age, read_timeout, service.lend_thread,
        sensors=sensors, sensor_runner=service.sensor_runner, wall=wall,
    )  # fmt: skip
    reader.setup()
    service.attach(reader)
    return reader, service
