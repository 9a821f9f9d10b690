"""
What C{serve} knows of its inputs without reading them: the level of each
input whose backend reports every change by itself (kernel edge events), so
that C{go}, C{read} and a subscription need no read and no thread hop.

The seam between such a backend and the rest: the backend provides
L{IEdgeSource}; L{InputState} asks it to watch each input, keeps the latest
level, answers L{InputState.known} from it, and tells its listeners of each
change (C{serve}'s publishing side records them in the journal, as the
sampler records the changes it polls). Inputs a backend cannot watch stay
with the sampler and the read pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from twisted.application.service import Service
from twisted.logger import Logger
from zope.interface import Interface

from rpisensor.sensing.inputs import InputSpec
from rpisensor.sensing.reading import Reading


class IEdgeSource(Interface):
    """A GPIO backend that reports every level change of an input by itself."""

    def watch_edges(channel: int, on_change: Callable[[bool, float], object]) -> bool:
        """
        Report the level of input C{channel} now, then each change, as
        C{on_change(high, when)} in the reactor's thread; C{when} is the
        reader's clock seconds at the change (the kernel's timestamp of the
        edge, not when the reactor heard of it).

        @return: whether it watches C{channel}; C{False} leaves it to polling.
        """

    def unwatch_edges() -> None:
        """Stop reporting changes (the service stops)."""


class InputState(Service):
    """
    The level of every input an L{IEdgeSource} watches, from the moment the
    service starts.

    @ivar tracked: the names of the inputs whose level is always known.
    """

    _log = Logger()

    def __init__(self, backend: IEdgeSource, inputs: Iterable[InputSpec]) -> None:
        self._backend = backend
        self._inputs = list(inputs)
        self.tracked: set[str] = set()
        self._latest: dict[str, Reading] = {}
        self._listeners: list[Callable[[Reading], object]] = []

    @classmethod
    def for_reader(cls, reader) -> InputState | None:
        """The state of C{reader}'s inputs, if its backend reports changes; else C{None}."""
        if IEdgeSource.providedBy(reader.backend):
            return cls(reader.backend, reader.inputs.values())
        return None

    def startService(self) -> None:
        super().startService()
        for spec in self._inputs:
            if self._backend.watch_edges(spec.pin, partial(self._changed, spec)):
                self.tracked.add(spec.name)
        if self.tracked:
            self._log.info(
                "Following the changes of {names} as the GPIO driver reports them: no reads needed.",
                names=", ".join(sorted(self.tracked)),
            )

    def stopService(self) -> None:
        super().stopService()
        self._backend.unwatch_edges()

    def known(self, name: str) -> Reading | None:
        """Input C{name}'s level now, if it is tracked and has been reported."""
        return self._latest.get(name)

    def add_listener(self, listener: Callable[[Reading], object]) -> None:
        """Call C{listener} with a L{Reading} at each change of a tracked input."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Reading], object]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self, spec: InputSpec, high: bool, when: float) -> None:
        previous = self._latest.get(spec.name)
        if previous is not None and previous.high == high:
            return  # a repeat of the level we know (the first report, or a missed edge)
        reading = self._latest[spec.name] = Reading(spec, high, when)
        for listener in list(self._listeners):
            try:
                listener(reading)
            except Exception:
                self._log.failure("A listener of input changes failed")
