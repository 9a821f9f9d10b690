"""
Reading named inputs without ever blocking the reactor.

Blocking reads run in a small dedicated thread pool (not the reactor's
default pool, which also resolves host names). Requests for an input whose
read is already queued or in flight share that read, and all the reads queued
in one reactor turn go to the pool as one job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.hw.interfaces import IGPIOBackend, SensorReadError
from rpisensor.sensing.inputs import InputSpec
from rpisensor.sensing.reading import Reading, UnknownInput

#: Runs a blocking callable elsewhere: C{runner(f, *args)} fires with f's result.
Runner = Callable[..., Deferred]


def read_levels(backend: IGPIOBackend, pins: Sequence[int]) -> list[bool | Exception]:
    """
    Read C{pins} one after another; runs in a worker thread.

    A failed read gives its exception in place of a level, so one bad input
    does not lose the others' readings.
    """
    results: list[bool | Exception] = []
    for pin in pins:
        try:
            results.append(backend.read(pin))
        except Exception as e:
            results.append(e)
    return results


class ReadTimeout(SensorReadError):
    """A read took longer than the read timeout; the sensor may be hung."""


class InputReader:
    """
    Reads named inputs through C{runner}, sharing reads (single flight) and
    batching one reactor turn's reads into one job.

    @param max_age: seconds a finished reading may be served again instead of
        reading anew; 0 (the default) means every request waits for a read
        that was queued or in flight when it arrived.
    @param read_timeout: seconds after which the requests waiting on a read
        fail with L{ReadTimeout}. The read's thread cannot be stopped: until it
        returns, its inputs are "stuck" and requests for them fail at once,
        and C{on_stuck(+1)} / C{on_stuck(-1)} let the pool lend a thread so
        the other inputs are still read.
    """

    _log = Logger()

    def __init__(
        self,
        backend: IGPIOBackend,
        inputs: Sequence[InputSpec],
        runner: Runner,
        clock: IReactorTime,
        max_age: float = 0.0,
        read_timeout: float = 10.0,
        on_stuck: Callable[[int], object] | None = None,
    ) -> None:
        if not inputs:
            raise ValueError("at least one input is needed")
        self.backend = backend
        self.inputs = {spec.name: spec for spec in inputs}
        self.first = inputs[0]
        self.max_age = max_age
        self.read_timeout = read_timeout
        self._on_stuck = on_stuck
        self._runner = runner
        #: The clock for timeouts and the readings' times.
        self.clock = clock
        self._waiters: dict[str, list[Callable[[Reading | Failure], object]]] = {}
        self._queued: list[str] = []
        self._flush_call = None
        self._latest: dict[str, Reading] = {}
        #: Input name -> when its stuck read started.
        self.stuck: dict[str, float] = {}
        #: How many pool jobs and input reads were started: for tests and the benchmark.
        self.jobs = 0
        #: Pool jobs started and not yet returned (stuck ones included).
        self.jobs_in_flight = 0
        self.reads = 0

    def setup(self) -> None:
        """Configure every input on the backend. Blocking; call at start-up."""
        for spec in self.inputs.values():
            self.backend.setup_input(spec.pin, spec.pull)

    def read(self, name: str) -> Deferred[Reading]:
        """
        A Deferred that fires with a fresh L{Reading} of input C{name}, or fails
        with the backend's error or L{ReadTimeout}.

        @raise UnknownInput: no input has that name.
        """
        d: Deferred[Reading] = Deferred()
        self.when_read(name, partial(_settle, d))
        return d

    def when_read(self, name: str, callback: Callable[[Reading | Failure], object]) -> None:
        """
        As L{read}, but call C{callback} with the L{Reading} or a L{Failure}
        (at once, if the answer is already known): the server's hot path,
        without a Deferred per request.

        @raise UnknownInput: no input has that name.
        """
        if name not in self.inputs:
            raise UnknownInput(name, self.inputs)
        if self.max_age > 0:
            latest = self._latest.get(name)
            if latest is not None and self.clock.seconds() - latest.time <= self.max_age:
                callback(latest)
                return
        if name in self.stuck:
            since = self.clock.seconds() - self.stuck[name]
            callback(Failure(ReadTimeout(
                f"input {name} is not answering: a read has been running for {since:.0f} s"
            )))  # fmt: skip
            return
        waiters = self._waiters.get(name)
        if waiters is not None:
            waiters.append(callback)
            return
        self._waiters[name] = [callback]
        self._queued.append(name)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def waiting(self, name: str) -> int:
        """How many requests wait for input C{name}'s queued or pending read."""
        return len(self._waiters.get(name, ()))

    def _flush(self) -> None:
        self._flush_call = None
        names, self._queued = self._queued, []
        pins = [self.inputs[name].pin for name in names]
        self.jobs += 1
        self.jobs_in_flight += 1
        self.reads += len(names)
        started = self.clock.seconds()
        timer = self.clock.callLater(self.read_timeout, self._timed_out, names, started)
        job = self._runner(read_levels, self.backend, pins)
        job.addBoth(self._job_done, names, timer)

    def _timed_out(self, names: list[str], started: float) -> None:
        self._log.warn(
            "Reading {names} took more than {timeout} s: the sensor may be hung. Requests for "
            "it get an error until the read returns; other inputs are still read.",
            names=", ".join(names),
            timeout=self.read_timeout,
        )
        error = Failure(
            ReadTimeout(f"reading {', '.join(names)} took more than {self.read_timeout:g} s")
        )
        for name in names:
            self.stuck[name] = started
            _notify(self._waiters.pop(name), error)
        if self._on_stuck is not None:
            self._on_stuck(+1)

    def _job_done(self, results: list[bool | Exception] | Failure, names: list[str], timer) -> None:
        self.jobs_in_flight -= 1
        timed_out = not timer.active()
        if timed_out:  # its waiters have had their error already
            for name in names:
                del self.stuck[name]
            if self._on_stuck is not None:
                self._on_stuck(-1)
            self._log.info("The stuck read of {names} returned.", names=", ".join(names))
        else:
            timer.cancel()
        if isinstance(results, Failure):
            self._log.failure("A read job failed outside the backend", results)
            results = [results.value] * len(names)
        now = self.clock.seconds()
        for name, result in zip(names, results):
            if isinstance(result, Exception):
                outcome: Reading | Failure = Failure(result)
            else:
                outcome = self._latest[name] = Reading(self.inputs[name], result, now)
            if not timed_out:
                _notify(self._waiters.pop(name), outcome)

    def flush_now(self) -> None:
        """Hand reads queued for the next turn to the pool now (at shutdown)."""
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()


def _settle(d: Deferred, outcome: Reading | Failure) -> None:
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)


_notify_log = Logger(namespace="rpisensor.reader")


def _notify(waiters: list[Callable], outcome: Reading | Failure) -> None:
    """Give C{outcome} to every waiter; one that raises does not stop the others."""
    for waiter in waiters:
        try:
            waiter(outcome)
        except Exception:
            _notify_log.failure("A reading's receiver failed")
