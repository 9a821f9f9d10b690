"""
Simulated inputs that press and release themselves, for demos and tests:
C{--sim-pattern NAME=ACTIVE_SECONDS,INACTIVE_SECONDS} on C{serve} and C{report}.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.application.service import Service
from twisted.logger import Logger

from rpisensor.sensing.inputs import InputSpec


def drive(backend, spec: InputSpec, action: str) -> bool:
    """
    Drive the simulated pin behind C{spec} so that the input is active
    (C{press}), inactive (C{release}) or the other way (C{toggle}); return
    whether it is now active.
    """
    active_level = not spec.active_low
    if action == "toggle":
        active = backend.level(spec.pin) != active_level
    else:
        active = action == "press"
    backend.set_level(spec.pin, active_level if active else not active_level)
    return active



@dataclass(frozen=True)
class Pattern:
    """
    A demo pattern for one simulated input: active for C{active} seconds,
    then inactive for C{inactive} seconds, over and over.
    """

    name: str
    active: float
    inactive: float


def parse_pattern(text: str) -> Pattern:
    """
    Parse C{NAME=ACTIVE_SECONDS,INACTIVE_SECONDS}, e.g. C{button=0.5,2}.

    @raise ValueError: with what is wrong.
    """
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or not name.strip() or len(parts) != 2:
        raise ValueError(f"expected NAME=ACTIVE_SECONDS,INACTIVE_SECONDS (e.g. button=0.5,2), got {text!r}")
    try:
        active, inactive = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"the durations in {text!r} must be numbers of seconds") from None
    if active <= 0 or inactive <= 0:
        raise ValueError(f"the durations in {text!r} must be more than 0 seconds")
    return Pattern(name.strip(), active, inactive)


class PatternService(Service):
    """Plays L{Pattern}s on simulated pins while the service runs."""

    _log = Logger()

    def __init__(self, clock, backend, inputs: dict[str, InputSpec], patterns: list[Pattern]) -> None:
        self._clock = clock
        self._backend = backend
        self._inputs = inputs
        self._patterns = patterns
        self._calls: dict[str, object] = {}

    def startService(self) -> None:
        super().startService()
        for pattern in self._patterns:
            self._log.info(
                "Demo pattern: {name} active for {active:g} s, then inactive for {inactive:g} s, "
                "repeating.",
                name=pattern.name,
                active=pattern.active,
                inactive=pattern.inactive,
            )
            self._step(pattern, True)

    def _step(self, pattern: Pattern, active: bool) -> None:
        drive(self._backend, self._inputs[pattern.name], "press" if active else "release")
        delay = pattern.active if active else pattern.inactive
        self._calls[pattern.name] = self._clock.callLater(delay, self._step, pattern, not active)

    def stopService(self) -> None:
        super().stopService()
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()

