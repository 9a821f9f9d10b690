"""
The outputs' state and their safety: what each one drives, who drives it,
and when it goes back to its safe level.

  - A latch (no C{ttl}) keeps the last level a command gave it, whoever
    sent it and whether or not that client stays connected.
  - A deadman (C{ttl}) goes back to its safe level when no command renews
    its non-safe level within C{ttl} seconds, and at once when the client
    that drives it disconnects.
  - A pulse drives the non-safe level for a time, then the safe one.

Each output has one timer on the injected clock, moved (C{reset}) by each
renewing command, never one timer per command. Writes run through the
backend's worker pool, one at a time per output, and coalesce: while one is
in flight, only the latest level asked for is written next, so a flood of
commands queues nothing. A command's reply comes once its level (or a later
one) is on the pin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.control.outputs import Level, OutputSpec
from rpisensor.hw.interfaces import GPIOError, IPWMBackend
from rpisensor.lograte import RateLimitedLog
from rpisensor.sensing.reader import Runner

#: Called with each output's level once it is on the pin: (spec, level, when).
OutputListener = Callable[[OutputSpec, Level, float], object]

#: Time within which a timer that fires counts as on time (float rounding).
_EPSILON = 1e-6


class ControlError(ValueError):
    """A control command that cannot be carried out; the message is the C{error:} reply's text."""


def who(driver) -> str:
    """How replies and the log name a client: its C{who} (address and certificate) or its C{peer}."""
    return getattr(driver, "who", None) or getattr(driver, "peer", None) or "a client"


@dataclass(eq=False)
class _Output:
    spec: OutputSpec
    #: The level the last command asked for: what C{outputs} shows.
    wanted: Level
    #: The level on the pin (C{None}: unknown, after a failed write).
    written: Level | None
    generation: int = 0
    writing: Deferred | None = None
    #: (generation, reply text, Deferred) of commands waiting for their level to be written.
    waiters: list = field(default_factory=list)
    #: When the output goes back to its safe level by itself, and why.
    safe_at: float | None = None
    why: str = ""
    #: Whether the driver's disconnect makes it safe at once.
    deadman: bool = False
    driver: object | None = None
    timer: IDelayedCall | None = None


class OutputController:
    """
    The declared outputs of one backend.

    @param runner: runs a blocking call in the backend's worker pool
        (the reader's), firing with its result.
    @param max_ttl: the longest a single command may hold an output off its
        safe level: a command's C{ttl=}, and a pulse's length (C{--max-ttl}).
    """

    _logger = Logger(namespace="rpisensor.control")

    def __init__(
        self,
        backend,
        outputs: Iterable[OutputSpec],
        runner: Runner,
        clock: IReactorTime,
        max_ttl: float = 60.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        #: Deadman timers are scheduled on C{clock}; the times output changes are told with are wall time.
        self.clock = clock
        self.wall = wall
        self.max_ttl = max_ttl
        self._runner = runner
        self._outputs = {spec.name: _Output(spec, spec.safe_level, None) for spec in outputs}
        self._listeners: list[OutputListener] = []
        self._log = RateLimitedLog(clock, self._logger)
        self._stopping = False
        #: The client that holds the claim: the only one that may drive outputs.
        self.claimant: object | None = None

    @property
    def specs(self) -> list[OutputSpec]:
        return [out.spec for out in self._outputs.values()]

    @property
    def names(self):
        """The declared outputs' names."""
        return self._outputs.keys()

    @property
    def pwm_capable(self) -> bool:
        return IPWMBackend.providedBy(self.backend)

    def setup(self) -> None:
        """
        Make every output drive its safe level. Blocking: call it at start-up,
        before the reactor runs, as the inputs are set up.
        """
        for out in self._outputs.values():
            self.backend.setup_output(out.spec.pin, out.spec.safe)
            out.written = out.spec.safe_level

    def add_listener(self, listener: OutputListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: OutputListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def level(self, name: str) -> Level:
        """The level output C{name} was last asked for."""
        return self._output(name).wanted

    def states(self) -> str:
        """The C{outputs} reply: C{led=on motor=off}, and who holds the claim."""
        text = " ".join(f"{name}={out.wanted.token}" for name, out in self._outputs.items())
        if self.claimant is not None:
            text += f"; claimed by {who(self.claimant)}"
        return text

    # -- commands ------------------------------------------------------------------------

    def set(self, driver, name: str, high: bool, ttl: float | None = None) -> Deferred[str]:
        out = self._commandable(driver, name)
        return self._command(out, Level.of(high), driver, ttl)

    def pwm(self, driver, name: str, percent: float, ttl: float | None = None) -> Deferred[str]:
        out = self._commandable(driver, name)
        if not self.pwm_capable:
            raise ControlError(
                f"pwm: the {self.backend.name} backend has no PWM; use set {name} on|off, "
                "or serve with --gpio rpi (software PWM)"
            )
        if not 0 <= percent <= 100:
            raise ControlError(f"pwm: duty is a percentage from 0 to 100, got {percent:g}")
        return self._command(out, Level.duty(percent), driver, ttl)

    def pulse(self, driver, name: str, milliseconds: float) -> Deferred[str]:
        out = self._commandable(driver, name)
        if not milliseconds > 0:
            raise ControlError(f"pulse: milliseconds must be more than 0, got {milliseconds:g}")
        if milliseconds / 1000 > self.max_ttl:
            raise ControlError(
                f"pulse: {milliseconds:g} ms is longer than this server allows "
                f"({self.max_ttl:g} s, --max-ttl)"
            )
        level = Level.of(not out.spec.safe)
        return self._command(out, level, driver, None, milliseconds / 1000)

    def stop(self, driver) -> Deferred[str]:
        """Every output to its safe level; allowed to every client with the grant, even during a claim."""
        if self._stopping:
            raise ControlError("the server is stopping: every output is going to its safe level")
        why = f"stop from {who(driver)}"
        done = [self._to_safe(out, why) for out in self._outputs.values()]
        states = " ".join(f"{out.spec.name}={out.wanted.token}" for out in self._outputs.values())
        return DeferredList(done, consumeErrors=True).addCallback(_stop_reply, f"stopped: {states}")

    def claim(self, driver) -> str:
        if self.claimant is not None and self.claimant is not driver:
            raise ControlError(
                f"claim: the outputs are claimed by {who(self.claimant)}; wait until it sends "
                "release or disconnects"
            )
        self.claimant = driver
        return "claimed: only this connection may drive the outputs until it sends release or disconnects"

    def release(self, driver) -> str:
        if self.claimant is not driver:
            held = f"; {who(self.claimant)} does" if self.claimant is not None else ""
            raise ControlError(f"release: this connection holds no claim{held}")
        self.claimant = None
        return "released: any client with the grant may drive the outputs"

    def connection_lost(self, driver) -> None:
        """C{driver} disconnected: its claim ends, and every deadman it drives goes safe now."""
        if self.claimant is driver:
            self.claimant = None
        for out in self._outputs.values():
            if out.driver is driver and out.deadman:
                self._to_safe(out, f"{who(driver)}, which drove it, disconnected").addErrback(
                    lambda _: None
                )

    # -- the state machine --------------------------------------------------------------

    def _output(self, name: str) -> _Output:
        out = self._outputs.get(name)
        if out is None:
            names = ", ".join(self._outputs) or "none (serve --output NAME=PIN declares one)"
            raise ControlError(f"unknown output {name!r}; outputs are: {names}")
        return out

    def _commandable(self, driver, name: str) -> _Output:
        out = self._output(name)
        if self._stopping:
            raise ControlError("the server is stopping: every output is going to its safe level")
        if self.claimant is not None and self.claimant is not driver:
            raise ControlError(
                f"the outputs are claimed by {who(self.claimant)}; wait until it sends release "
                "or disconnects"
            )
        return out

    def _ttl(self, out: _Output, asked: float | None) -> float | None:
        if asked is None:
            return out.spec.ttl
        if not asked > 0:
            raise ControlError(f"ttl must be more than 0 seconds, got {asked:g}")
        if asked > self.max_ttl:
            raise ControlError(
                f"ttl={asked:g} is over the longest this server allows ({self.max_ttl:g} s, --max-ttl)"
            )
        if out.spec.ttl is not None and asked > out.spec.ttl:
            raise ControlError(
                f"ttl={asked:g} is over {out.spec.name}'s own ttl ({out.spec.ttl:g} s): a "
                "command may shorten a deadman, not lengthen it"
            )
        return asked

    def _command(
        self, out: _Output, level: Level, driver, ttl: float | None, pulse: float | None = None
    ) -> Deferred[str]:
        ttl = self._ttl(out, ttl)
        now = self.clock.seconds()
        reply = f"{out.spec.name} {level.text}"
        if level == out.spec.safe_level:
            out.safe_at, out.why, out.deadman, out.driver = None, "", False, None
        else:
            ends = []
            if ttl is not None:
                ends.append((now + ttl, f"no command renewed it within its ttl of {ttl:g} s"))
            if pulse is not None:
                ends.append((now + pulse, f"its pulse of {pulse * 1000:g} ms ended"))
                reply += f" for {pulse * 1000:g} ms"
            out.safe_at, out.why = min(ends) if ends else (None, "")
            out.deadman, out.driver = ttl is not None, driver
        self._arm(out)
        return self._drive(out, level, reply)

    def _to_safe(self, out: _Output, why: str) -> Deferred[str]:
        out.safe_at, out.why, out.deadman, out.driver = None, "", False, None
        self._arm(out)
        safe = out.spec.safe_level
        if out.wanted != safe:
            self._log.info(
                "Output {name} back to its safe level ({safe}): {why}.",
                key=f"safe {out.spec.name}", name=out.spec.name, safe=safe.text, why=why,
            )  # fmt: skip
        return self._drive(out, safe, f"{out.spec.name} {safe.text}")

    def _arm(self, out: _Output) -> None:
        """Point the output's one timer at its C{safe_at}, or stop it."""
        timer = out.timer
        if out.safe_at is None:
            if timer is not None and timer.active():
                timer.cancel()
            out.timer = None
            return
        delay = max(0.0, out.safe_at - self.clock.seconds())
        if timer is not None and timer.active():
            timer.reset(delay)
        else:
            out.timer = self.clock.callLater(delay, self._due, out)

    def _due(self, out: _Output) -> None:
        out.timer = None
        if out.safe_at is None:
            return
        late = out.safe_at - self.clock.seconds()
        if late > _EPSILON:  # (a reset the clock had not applied yet)
            self._arm(out)
            return
        self._to_safe(out, out.why).addErrback(lambda _: None)

    # -- writing -------------------------------------------------------------------------

    def _drive(self, out: _Output, level: Level, reply: str) -> Deferred[str]:
        out.wanted = level
        out.generation += 1
        d: Deferred[str] = Deferred()
        out.waiters.append((out.generation, reply, d))
        self._flush(out)
        return d

    def _flush(self, out: _Output) -> None:
        if out.writing is not None:
            return
        if self._stopping:  # shutdown writes the safe level itself, then releases the pin
            self._answer(out, out.generation, ControlError("the server is stopping"))
            return
        if out.written == out.wanted:
            self._answer(out, out.generation, None)
            return
        level, generation = out.wanted, out.generation
        out.writing = self._runner(self._write, out.spec, level)
        out.writing.addBoth(self._written, out, level, generation)

    def _write(self, spec: OutputSpec, level: Level) -> None:
        """In a worker thread: drive the pin."""
        if level.pwm:
            self.backend.pwm(spec.pin, level.value * 100, spec.frequency)
        else:
            self.backend.write(spec.pin, level.high)

    def _written(self, result, out: _Output, level: Level, generation: int) -> None:
        out.writing = None
        if isinstance(result, Failure):
            out.written = None
            error = result.getErrorMessage()
            if not result.check(GPIOError):
                error = f"{result.type.__name__}: {error}"
            self._log.error(
                "Driving output {name} {wanted} failed: {error}. Check the pin and its wiring.",
                key=f"write failed {out.spec.name}", name=out.spec.name, wanted=level.text, error=error,
            )  # fmt: skip
            self._answer(out, generation, ControlError(f"driving {out.spec.name} {level.text} failed: {error}"))
        else:
            changed = out.written != level
            out.written = level
            self._answer(out, generation, None)
            if changed:
                when = self.wall()
                for listener in list(self._listeners):
                    try:
                        listener(out.spec, level, when)
                    except Exception:
                        self._logger.failure("A listener of output changes failed")
        if out.generation > generation and not self._stopping:
            self._flush(out)

    def _answer(self, out: _Output, generation: int, error: Exception | None) -> None:
        ready = [w for w in out.waiters if w[0] <= generation]
        out.waiters = [w for w in out.waiters if w[0] > generation]
        for _, reply, d in ready:
            if error is None:
                d.callback(reply)
            else:
                d.errback(Failure(error))

    # -- shutdown ------------------------------------------------------------------------

    def shutdown(self) -> Deferred[None]:
        """
        Write every output's safe level, then return its pin to input: the
        external pull resistor holds it from then on. No command is carried
        out after this is called.
        """
        return Deferred.fromCoroutine(self._shutdown())

    async def _shutdown(self) -> None:
        self._stopping = True
        self.claimant = None
        for out in self._outputs.values():
            out.safe_at = None
            self._arm(out)
        for out in self._outputs.values():
            if out.writing is not None:
                try:
                    await _quiet(out.writing)
                except Exception:
                    pass
            safe = out.spec.safe_level
            try:
                await self._runner(self.backend.release_output, out.spec.pin, out.spec.safe)
            except Exception as e:
                self._logger.error(
                    "Could not return output {name} to its safe level and to input: {error}.",
                    name=out.spec.name, error=str(e) or type(e).__name__,
                )  # fmt: skip
                continue
            changed, out.written, out.wanted = out.written != safe, safe, safe
            self._answer(out, out.generation, ControlError("the server is stopping"))
            if changed:
                for listener in list(self._listeners):
                    try:
                        listener(out.spec, safe, self.wall())
                    except Exception:
                        self._logger.failure("A listener of output changes failed")
        self._log.flush()


def _quiet(d: Deferred) -> Deferred:
    """A Deferred that fires when C{d} does, without taking C{d}'s result."""
    waiter: Deferred = Deferred()
    d.addBoth(lambda result: (waiter.callback(None), result)[1])
    return waiter


def _stop_reply(results, text: str) -> str:
    failures = [str(result.value) for ok, result in results if not ok]
    if failures:
        raise ControlError("; ".join(failures))
    return text

