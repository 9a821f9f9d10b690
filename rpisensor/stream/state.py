"""
What C{serve} knows of its inputs without reading them: the level of each
input whose backend reports every change by itself (kernel edge events), so
that C{go}, C{read} and a subscription need no read and no thread hop.

The seam between such a backend and the rest: the backend provides
L{rpisensor.hw.interfaces.IEdgeSource} (the gpiod backend, and simulated
pins that play no slow sensor); L{InputState} has it watch its inputs, keeps
the latest level, answers L{InputState.known} from it, and tells its
listeners of each change (C{serve}'s publishing side records them in the
journal, as the sampler records the changes it polls). Inputs of a backend
that must be read stay with the sampler and the read pool.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from twisted.application.service import Service
from twisted.logger import Logger

from rpisensor.hw.interfaces import IEdgeSource, LevelChange
from rpisensor.lograte import RateLimitedLog
from rpisensor.sensing.inputs import InputSpec
from rpisensor.sensing.sample import InputLevel


class InputState(Service):
    """
    The level of every input an L{IEdgeSource} watches, from the moment the
    service starts.

    @ivar tracked: the names of the inputs whose level is always known.
    """

    _log = Logger()

    def __init__(
        self, reactor, backend, inputs: Iterable[InputSpec], wall: Callable[[], float] = time.time
    ) -> None:
        self._reactor = reactor
        self._wall = wall
        self._backend = backend
        self._inputs = {spec.pin: spec for spec in inputs}
        self.tracked: set[str] = {spec.name for spec in self._inputs.values()}
        self._latest: dict[str, InputLevel] = {}
        self._listeners: list[Callable[[InputLevel], object]] = []
        self._lost_log = RateLimitedLog(reactor, self._log)
        #: Changes the driver said it missed (its event buffer overflowed), per input.
        self.lost: dict[str, int] = {}
        #: Per channel, the levels L{learn} took that the driver has yet to report (in order).
        self._learned: dict[int, deque[bool]] = {}

    @classmethod
    def for_reader(cls, reader, reactor) -> InputState | None:
        """The state of C{reader}'s inputs, if its backend reports their changes; else C{None}."""
        backend = reader.backend
        if IEdgeSource.providedBy(backend) and getattr(backend, "tracks_levels", True):
            return cls(reactor, backend, reader.inputs.values(), reader.wall)
        return None

    def startService(self) -> None:
        super().startService()
        now = self._wall()
        for spec in self._inputs.values():
            self._latest[spec.name] = InputLevel(spec, self._backend.level(spec.pin), now)
        self._backend.watch(self._reactor, self._reported)
        names = ", ".join(sorted(self.tracked))
        if getattr(self._backend, "tracks_levels", True):
            self._log.info("Following the changes of {names} as the GPIO driver reports them: no reads needed.",
                           names=names)  # fmt: skip
        else:
            self._log.info(
                "Following the changes of {names}: read every {interval:g} s (--poll-interval) in one pass by a "
                "thread of their own, which wakes the rest only on a change.",
                names=names, interval=getattr(self._backend, "interval", 0.0),
            )  # fmt: skip

    def stopService(self) -> None:
        super().stopService()
        self._backend.unwatch()

    def known(self, name: str) -> InputLevel | None:
        """Input C{name}'s level now, if it is tracked and has been reported."""
        return self._latest.get(name)

    def add_listener(self, listener: Callable[[InputLevel], object]) -> None:
        """Call C{listener} with a L{InputLevel} at each change of a tracked input."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[InputLevel], object]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def learn(self, change: LevelChange) -> None:
        """
        A change made in this process (the C{sim} command drives a simulated
        pin), known before the driver reports it: commands that follow it on
        the same connection see it. The driver's own report is then a repeat,
        and taken as one even when later changes were learned before it came
        (fast commands: press, release, press), so no change is recorded twice.
        """
        spec = self._inputs.get(change.channel)
        previous = self._latest.get(spec.name) if spec is not None else None
        if previous is not None and previous.high != change.high:
            self._learned.setdefault(change.channel, deque()).append(change.high)
        self._changed(change)

    def _reported(self, change: LevelChange) -> None:
        """A change as the driver reports it: a repeat of one learned already, or news."""
        learned = self._learned.get(change.channel)
        if learned:
            if not change.lost and learned[0] == change.high:
                learned.popleft()
                return
            learned.clear()  # the driver tells otherwise: from here on it is the truth
        self._changed(change)

    def _changed(self, change: LevelChange) -> None:
        spec = self._inputs.get(change.channel)
        if spec is None:
            return
        if change.lost:
            self.lost[spec.name] = self.lost.get(spec.name, 0) + change.lost
            self._lost_log.warn(
                "{count} changes of input {name} were missed: the GPIO driver's event buffer "
                "overflowed (the system was too busy to read it). The level is known again from "
                "this change on.",
                key=f"lost {spec.name}", count=change.lost, name=spec.name,
            )  # fmt: skip
        previous = self._latest.get(spec.name)
        if previous is not None and previous.high == change.high:
            return  # a repeat of the level we know
        reading = self._latest[spec.name] = InputLevel(spec, change.high, change.when)
        for listener in list(self._listeners):
            try:
                listener(reading)
            except Exception:
                self._log.failure("A listener of input changes failed")
