"""
Level changes for a backend without edge events (C{RPi.GPIO}, which rpisensor
reads by polling): one thread reads every input in one pass each interval and
wakes the reactor only when a level changed.

On a Raspberry Pi, reading an input through C{RPi.GPIO} is a read of a
memory-mapped register, about a microsecond. Polling through the read pool
costs far more than that per input and interval (a job handed to a pool
thread, a wake-up of the reactor, a Deferred per read, whether or not
anything changed), which on a Pi Zero's one core is a noticeable share of the
CPU for a few buttons. Here the reads stay off the reactor, in a thread of
their own, and the reactor hears of a change only: an idle input costs a few
register reads per interval and nothing else.

L{PolledEdges} offers the changes as an L{IEdgeSource}, as kernel edge events
are, so that C{serve} records and streams them the same way (see
L{rpisensor.stream.state}). Unlike edge events, a polled level is only as
fresh as the last pass: a pulse shorter than the interval may fall between
two passes and be missed, and C{go} still reads the pin (through the read
pool) rather than answer from a level up to an interval old.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from twisted.logger import Logger
from zope.interface import implementer

from rpisensor.hw.interfaces import GPIOError, IEdgeSource, IGPIOBackend, LevelChange
from rpisensor.lograte import RateLimitedLog

if TYPE_CHECKING:
    from rpisensor.sensing.inputs import InputSpec

#: How long L{PolledEdges.unwatch} waits for the polling thread to finish its pass.
STOP_TIMEOUT = 5.0


class _Input:
    """What the polling thread knows of one input."""

    __slots__ = ("channel", "name", "settle", "high", "held", "failure")

    def __init__(self, spec: InputSpec, high: bool, interval: float) -> None:
        self.channel = spec.pin
        self.name = spec.name
        #: Passes after the first that must read a new level before it counts:
        #: the debounce in whole intervals, rounded up (0 without a debounce).
        self.settle = math.ceil(spec.debounce / interval - 1e-9) if spec.debounce > 0 else 0
        #: The level last reported.
        self.high = high
        #: Passes in a row that have read the other level (while it settles).
        self.held = 0
        #: The text of the read failure last reported, while reads fail.
        self.failure: str | None = None


@implementer(IEdgeSource)
class PolledEdges:
    """
    The changes of C{inputs} on C{backend}, found by reading every input once
    each C{interval} seconds in a thread of their own; delivered in the
    reactor's thread, at most one wake-up of the reactor per pass, and none
    for a pass that found no change.

    An input with a C{debounce} reports a new level once every pass for that
    long has read it (the kernel's "stable for the period" rule, in whole
    intervals: the first pass that reads it and as many after it as the
    debounce spans). Passes are scheduled on the monotonic clock; a change is
    stamped with the wall time (C{wall}) of the pass that reports it.

    The first pass happens here, in the calling thread: build this at
    start-up, before the reactor runs, as the inputs are set up.

    @raise GPIOError: an input cannot be read at all.

    @param wall: the wall clock of the changes' timestamps (safe to call from any thread).
    @param wait: waits between passes; called with the seconds until the next
        one, returns C{True} to stop. By default a wait that L{unwatch} ends
        at once (a lock it releases: on Linux one timed futex wait, cheaper
        than an C{Event}'s). Tests pass one that runs the passes in step with them.
    """

    #: The levels are a pass old at most, not exact: C{go} reads the pin.
    tracks_levels = False
    _log = Logger()

    def __init__(
        self,
        backend: IGPIOBackend,
        inputs: Iterable[InputSpec],
        interval: float,
        wait: Callable[[float], bool] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.interval = interval
        self._wall = wall
        #: Held while polling runs; L{unwatch} releases it, which ends the wait between passes.
        self._running = threading.Lock()
        self._wait = wait if wait is not None else self._until_stopped
        self._inputs = [_Input(spec, backend.read(spec.pin), interval) for spec in inputs]
        self._by_channel = {state.channel: state for state in self._inputs}
        self._thread: threading.Thread | None = None
        self._reactor = None
        self._on_change: Callable[[LevelChange], object] | None = None
        self._failure_log: RateLimitedLog | None = None

    @property
    def names(self) -> list[str]:
        return [state.name for state in self._inputs]

    def level(self, channel: int) -> bool:
        """The level the last pass reported; no read."""
        return self._by_channel[channel].high

    def watch(self, reactor, on_change: Callable[[LevelChange], object]) -> None:
        """Start polling: changes go to C{on_change} in the reactor's thread."""
        self.unwatch()
        self._reactor = reactor
        self._on_change = on_change
        self._failure_log = RateLimitedLog(reactor, self._log)
        self._running.acquire()
        self._thread = threading.Thread(target=self._poll, name="rpisensor-poll", daemon=True)
        self._thread.start()
        self._log.info(
            "Polling {names} every {interval:g} s (--poll-interval) in one thread: each pass reads "
            "every input, and only a change wakes the server.",
            names=", ".join(self.names), interval=self.interval,
        )  # fmt: skip

    def unwatch(self) -> None:
        """Stop polling; the pass in progress finishes first (reads of a few microseconds)."""
        thread, self._thread = self._thread, None
        self._on_change = None
        if thread is not None:
            self._running.release()
            thread.join(STOP_TIMEOUT)

    # -- the polling thread ------------------------------------------------------------

    def _poll(self) -> None:
        interval = self.interval
        due = time.monotonic()
        while True:
            changes = self._pass()
            if changes:
                self._reactor.callFromThread(self._deliver, changes)
            due += interval
            now = time.monotonic()
            if due < now:  # late (a busy machine): the missed passes are skipped, not caught up
                due = now
            elif due > now + interval:  # the last wait ended early: never wait more than an interval
                due = now + interval
            if self._wait(due - now) or not self._running.locked():
                return

    def _until_stopped(self, seconds: float) -> bool:
        """Wait C{seconds}, or less if L{unwatch} stops the polling: then C{True}."""
        running = self._running
        if running.acquire(True, seconds) if seconds > 0 else running.acquire(False):
            running.release()
            return True
        return False

    def _pass(self) -> list[LevelChange] | None:
        """Read every input once; the changes it found, if any."""
        changes = None
        read = self.backend.read
        now = None
        for state in self._inputs:
            try:
                high = read(state.channel)
            except Exception as e:  # the thread must go on: the failure is logged, once per kind
                self._failed(state, e)
                continue
            if state.failure is not None:
                state.failure = None
                self._reactor.callFromThread(self._log_reads_again, state.name)
            if high == state.high:
                state.held = 0  # nothing new, or a bounce that came back
                continue
            if state.held < state.settle:
                state.held += 1
                continue
            state.high, state.held = high, 0
            if now is None:
                now = self._wall()
            if changes is None:
                changes = []
            changes.append(LevelChange(now, state.channel, high))
        return changes

    def _failed(self, state: _Input, error: Exception) -> None:
        text = str(error) if isinstance(error, GPIOError) else f"{type(error).__name__}: {error}"
        if state.failure != text:
            state.failure = text
            self._reactor.callFromThread(self._log_failure, state.name, text)

    # -- in the reactor's thread -------------------------------------------------------

    def _deliver(self, changes: list[LevelChange]) -> None:
        on_change = self._on_change
        if on_change is None:
            return  # stopped meanwhile
        for change in changes:
            on_change(change)

    def _log_failure(self, name: str, error: str) -> None:
        self._failure_log.warn(
            "Polling input {name} failed: {error}. Its last level stands until a read succeeds; "
            "check the pin and its wiring.",
            key=f"poll failed: {name}", name=name, error=error,
        )  # fmt: skip

    def _log_reads_again(self, name: str) -> None:
        self._failure_log.info("Input {name} reads again.", key=f"poll reads again: {name}", name=name)


def polls_cheaply(backend: IGPIOBackend) -> bool:
    """Whether C{backend}'s reads are register reads worth a polling thread (RPi.GPIO's)."""
    return getattr(backend, "fast_reads", False)
