"""
Reading named inputs without ever blocking the reactor.

Blocking reads run in a small dedicated thread pool (not the reactor's
default pool, which also resolves host names), one pool job per input read,
so a hung input holds up only its own job and the other inputs are still
read. Requests for an input whose read is already queued or running share
that read (single flight): many requests in one reactor turn cost one read.

A read's timeout counts from the moment a worker thread begins it, not from
when it was queued, so a read waiting for a thread behind a slow one is not
blamed for the wait.

Measurement sensors (L{MeasurementSpec}: a DS18B20, an IIO channel, a file)
are read the same way, each with its own timeout, through a runner of their
own (their own threads: a 750 ms conversion never delays a button's read).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.hw.interfaces import GPIOError, IGPIOBackend, SensorReadError
from rpisensor.lograte import RateLimitedLog
from rpisensor.sensing.inputs import InputSpec
from rpisensor.sensing.measure import MeasurementSpec
from rpisensor.sensing.sample import InputLevel, Measurement, Sample, UnknownInput

#: Runs a blocking callable elsewhere: C{runner(f, *args)} fires with f's result.
Runner = Callable[..., Deferred]


def timed_read(
    backend: IGPIOBackend, pin: int, wall: Callable[[], float], began: Callable[[float], object]
) -> tuple[bool, float]:
    """
    Read C{pin}; runs in a worker thread. Calls C{began} with the time the
    read begins, then returns the level and the time the backend returned it.

    Both times are wall time (C{wall}, C{time.time}: safe from any thread), as
    a reading's timestamp is, and as the kernel stamps edge events.
    """
    began(wall())
    high = backend.read(pin)
    return high, wall()


def timed_measure(
    spec: MeasurementSpec, wall: Callable[[], float], began: Callable[[float], object]
) -> tuple[float, float]:
    """
    Measure once; runs in a worker thread. As L{timed_read}, with the value
    rounded to 6 decimals: that drops a scale's float noise (1013.2499999999999
    hPa) and none of any sensor's precision.
    """
    began(wall())
    value = round(spec.measure(), 6)
    return value, wall()


class ReadTimeout(SensorReadError):
    """A read took longer than the read timeout; the sensor may be hung."""


class _Read:
    """One read of one input or sensor: queued, running, or stuck past its timeout."""

    __slots__ = ("spec", "timeout", "waiters", "began", "timer", "stuck", "finished")

    def __init__(
        self, spec: InputSpec | MeasurementSpec, timeout: float, waiter: Callable[[Sample | Failure], object]
    ) -> None:
        self.spec = spec
        self.timeout = timeout
        self.waiters = [waiter]
        #: When a worker thread began the read; None while it waits for a thread.
        self.began: float | None = None
        self.timer: IDelayedCall | None = None
        self.stuck = False
        self.finished = False


def _call_now(f, *args) -> None:
    f(*args)


class InputReader:
    """
    Reads named inputs through C{runner}, one job per input read, sharing a
    read among the requests that arrive while it is queued or running.

    @param clock: the reactor (a L{Clock} in tests): timeouts and readings'
        times. When it can take calls from threads (a reactor), a worker says
        through its C{callFromThread} that a read has begun; otherwise (a
        L{Clock}, with a runner that runs jobs in the calling thread) it says
        so directly.
    @param max_age: seconds a finished reading may be served again instead of
        reading anew; 0 (the default) means every request waits for a read
        that was queued or running when it arrived.
    @param read_timeout: seconds a read may run, counted from when a worker
        begins it, before the requests waiting on it fail with L{ReadTimeout}.
        The read's thread cannot be stopped: until it returns, its input is
        "stuck" and requests for it fail at once, and C{on_stuck(+1)} /
        C{on_stuck(-1)} let the pool lend a thread so the other inputs are
        still read.
    @param sensors: measurement sensors, read by name as the inputs are
        (names shared by none of the inputs), each with its own
        C{timeout}, through C{sensor_runner}: a runner with a thread per
        sensor (L{rpisensor.sensing.pool.ReadPoolService}'s), so a stuck sensor holds only its own
        and none is lent. Without it they go through C{runner}, and
        C{on_stuck} lends a thread as for an input.
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
        sensors: Sequence[MeasurementSpec] = (),
        sensor_runner: Runner | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not inputs:
            raise ValueError("at least one input is needed")
        self.backend = backend
        #: The digital inputs, by name (pins, levels: C{go}, the sampler, edge events).
        self.inputs = {spec.name: spec for spec in inputs}
        #: The measurement sensors, by name.
        self.sensors = {spec.name: spec for spec in sensors}
        shared = sorted(set(self.inputs) & set(self.sensors))
        if shared:
            raise ValueError(f"{shared[0]!r} is the name of an input and of a sensor")
        self._sensor_runner = sensor_runner if sensor_runner is not None else runner
        # A sensor's own runner has a thread per sensor: a stuck one holds only its own.
        self._sensor_on_stuck = None if sensor_runner is not None else on_stuck
        self.first = inputs[0]
        self.max_age = max_age
        self.read_timeout = read_timeout
        self._on_stuck = on_stuck
        self._runner = runner
        #: The clock timeouts are scheduled on, and the wall clock of the readings' times
        #: (the ages and durations compared with them are measured on it too).
        self.clock = clock
        self.wall = wall
        self._from_thread = clock.callFromThread if IReactorFromThreads.providedBy(clock) else _call_now
        # A failing or hung sensor is logged once per failure kind (then once
        # more when it reads again), not once per request or read.
        self._sensor_log = RateLimitedLog(clock, self._log)
        self._failing: dict[str, str] = {}
        #: Input or sensor name -> why its last read failed (or why it is not answering),
        #: until a read succeeds: what the web page shows on its tile.
        self.errors: dict[str, str] = {}
        #: Input name -> its read that is queued or running and not yet answered.
        self._pending: dict[str, _Read] = {}
        self._latest: dict[str, Sample] = {}
        self._settled: list[Deferred[None]] = []
        #: Input name -> when its stuck read began.
        self.stuck: dict[str, float] = {}
        #: Pool jobs handed to the runner (one per input read), and reads a
        #: worker has begun (as the reactor has heard): for tests and the
        #: benchmark. The difference is the reads still waiting for a thread.
        self.jobs = 0
        self.reads = 0
        #: Pool jobs handed out and not yet returned (stuck ones included).
        self.jobs_in_flight = 0
        #: Called with (seconds a read took, whether it failed) at the end of every read
        #: a worker began: the metrics' read latency and read errors.
        self.on_read: Callable[[float, bool], object] | None = None

    def setup(self) -> None:
        """
        Configure every input on the backend. Blocking: call it at start-up,
        before the reactor runs (see L{rpisensor.sensing.pool.open_reader}).
        """
        for spec in self.inputs.values():
            if spec.debounce:
                self.backend.setup_input(spec.pin, spec.pull, debounce=spec.debounce)
            else:
                self.backend.setup_input(spec.pin, spec.pull)

    @property
    def names(self) -> list[str]:
        """Every input's and every sensor's name: inputs first, as given."""
        return [*self.inputs, *self.sensors]

    @property
    def longest_timeout(self) -> float:
        """The longest any read may run before it counts as stuck (shutdown waits that long)."""
        return max([self.read_timeout, *(spec.timeout for spec in self.sensors.values())])

    def read(self, name: str) -> Deferred[Sample]:
        """
        A Deferred that fires with a fresh L{InputLevel} of input C{name} (a
        L{Measurement} for a sensor), or fails with the backend's or the
        sensor's error or L{ReadTimeout}.

        @raise UnknownInput: no input has that name.
        """
        d: Deferred[InputLevel] = Deferred()
        self.when_read(name, partial(_settle, d))
        return d

    def when_read(self, name: str, callback: Callable[[Sample | Failure], object]) -> None:
        """
        As L{read}, but call C{callback} with the L{InputLevel} or a L{Failure}
        (at once, if the answer is already known): the server's hot path,
        without a Deferred per request.

        @raise UnknownInput: no input has that name.
        """
        spec = self.inputs.get(name) or self.sensors.get(name)
        if spec is None:
            raise UnknownInput(name, self.names)
        if self.max_age > 0:
            latest = self._latest.get(name)
            if latest is not None and self.wall() - latest.time <= self.max_age:
                callback(latest)
                return
        if name in self.stuck:
            since = self.wall() - self.stuck[name]
            callback(Failure(ReadTimeout(
                f"{_what(spec)} {name} is not answering: a read has been running for {since:.0f} s"
            )))  # fmt: skip
            return
        pending = self._pending.get(name)
        if pending is not None:
            pending.waiters.append(callback)
            return
        sensor = isinstance(spec, MeasurementSpec)
        read = self._pending[name] = _Read(spec, spec.timeout if sensor else self.read_timeout, callback)
        self.jobs += 1
        self.jobs_in_flight += 1
        began = partial(self._from_thread, self._began, read)
        if sensor:
            job = self._sensor_runner(timed_measure, spec, self.wall, began)
        else:
            job = self._runner(timed_read, self.backend, spec.pin, self.wall, began)
        job.addBoth(self._finished, read)

    def waiting(self, name: str) -> int:
        """How many requests wait for input C{name}'s queued or running read."""
        pending = self._pending.get(name)
        return 0 if pending is None else len(pending.waiters)

    def when_settled(self) -> Deferred[None]:
        """
        A Deferred that fires once no read is queued or running, except reads
        already stuck past their timeout, which are not waited for (shutdown).
        It cannot wait for ever: every running read returns or is declared
        stuck within the read timeout, and a stuck read lends its thread to
        the reads queued behind it.
        """
        d: Deferred[None] = Deferred(canceller=self._settled.remove)
        self._settled.append(d)
        self._check_settled()
        return d

    def _check_settled(self) -> None:
        if self.jobs_in_flight > len(self.stuck):
            return
        settled, self._settled = self._settled, []
        for d in settled:
            d.callback(None)

    def _began(self, read: _Read, began: float) -> None:
        self.reads += 1
        if read.finished:  # a runner in the reactor's thread: the end was heard first
            return
        read.began = began
        # The worker took the time; the reactor may hear of it a little later.
        elapsed = min(max(self.wall() - began, 0.0), read.timeout)
        read.timer = self.clock.callLater(read.timeout - elapsed, self._timed_out, read)

    def _timed_out(self, read: _Read) -> None:
        read.timer = None
        read.stuck = True
        name = read.spec.name
        self.stuck[name] = read.began
        del self._pending[name]
        self.errors[name] = f"not answering: a read has taken more than {read.timeout:g} s"
        if self._failing.get(name) != "hung":
            self._failing[name] = "hung"
            self._sensor_log.warn(
                f"Reading {_what(read.spec)} {{name}} took more than {{timeout}} s: the sensor may be hung. "
                "Requests for it get an error until the read returns; other inputs are "
                "still read.",
                key=f"hung: {name}",
                name=name,
                timeout=read.timeout,
            )
        waiters, read.waiters = read.waiters, []
        _notify(waiters, Failure(ReadTimeout(f"reading {name} took more than {read.timeout:g} s")))
        on_stuck = self._stuck_callback(read.spec)
        if on_stuck is not None:
            on_stuck(+1)
        self._check_settled()

    def _stuck_callback(self, spec: InputSpec | MeasurementSpec) -> Callable[[int], object] | None:
        return self._sensor_on_stuck if isinstance(spec, MeasurementSpec) else self._on_stuck

    def _finished(self, result: tuple[bool | float, float] | Failure, read: _Read) -> None:
        read.finished = True
        self.jobs_in_flight -= 1
        name = read.spec.name
        if read.timer is not None:
            read.timer.cancel()
            read.timer = None
        if self.on_read is not None and read.began is not None:
            self.on_read(max(0.0, self.wall() - read.began), isinstance(result, Failure))
        if isinstance(result, Failure):
            outcome: Sample | Failure = result
            self._read_failed(read.spec, result)
        else:
            got, when = result
            kind = Measurement if isinstance(read.spec, MeasurementSpec) else InputLevel
            outcome = self._latest[name] = kind(read.spec, got, when)
            self.errors.pop(name, None)
            if self._failing.pop(name, None) is not None and not read.stuck:
                self._sensor_log.info(
                    f"{_what(read.spec).capitalize()} {{name}} reads again.", key=f"reads again: {name}", name=name
                )
        if read.stuck:  # its waiters have had their error already
            del self.stuck[name]
            on_stuck = self._stuck_callback(read.spec)
            if on_stuck is not None:
                on_stuck(-1)
            self._sensor_log.info(
                f"The stuck read of {_what(read.spec)} {{name}} returned after {{seconds:.1f}} s.",
                key=f"returned: {name}",
                name=name,
                seconds=self.wall() - read.began,
            )
        else:
            del self._pending[name]
            _notify(read.waiters, outcome)
        self._check_settled()

    def _read_failed(self, spec: InputSpec | MeasurementSpec, failure: Failure) -> None:
        name = spec.name
        error = failure.getErrorMessage()
        if not failure.check(GPIOError):  # not a sensor's error: name the exception
            error = f"{failure.type.__name__}: {error}"
        self.errors[name] = error
        # Logged once until it reads again (and rate-limited across such
        # rounds): a sensor failing every read cannot fill the log.
        if self._failing.get(name) == "failed":
            return
        self._failing[name] = "failed"
        self._sensor_log.warn(
            f"Reading {_what(spec)} {{name}} failed: {{error}}. Requests for it get an error until a read "
            "succeeds; check the sensor and its wiring.",
            key=f"failed: {name}",
            name=name,
            error=error,
        )


def _what(spec: InputSpec | MeasurementSpec) -> str:
    return "sensor" if isinstance(spec, MeasurementSpec) else "input"


def _settle(d: Deferred, outcome: Sample | Failure) -> None:
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)


_notify_log = Logger(namespace="rpisensor.reader")


def _notify(waiters: list[Callable], outcome: Sample | Failure) -> None:
    """Give C{outcome} to every waiter; one that raises does not stop the others."""
    for waiter in waiters:
        try:
            waiter(outcome)
        except Exception:
            _notify_log.failure("A reading's receiver failed")
