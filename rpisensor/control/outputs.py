"""
Declared outputs: C{--output NAME=PIN[,safe=off|on][,ttl=SECONDS][,freq=HZ]}.
Nothing a client can drive is not declared here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rpisensor.hw.interfaces import PinError
from rpisensor.hw.pins import BCM_TO_BOARD, to_bcm

#: The PWM frequency when C{freq=} is not given: smooth for LEDs and small DC motors.
DEFAULT_FREQUENCY = 100.0


@dataclass(frozen=True)
class Level:
    """
    What an output drives: C{value} 1 (on), 0 (off), or the fraction of each
    period it is high under PWM (C{pwm}).
    """

    value: float
    pwm: bool = False

    @classmethod
    def of(cls, high: bool) -> Level:
        return cls(1.0 if high else 0.0)

    @classmethod
    def duty(cls, percent: float) -> Level:
        """PWM at C{percent}; 0 and 100 are plain off and on."""
        if percent <= 0:
            return cls(0.0)
        if percent >= 100:
            return cls(1.0)
        return cls(percent / 100, pwm=True)

    @property
    def high(self) -> bool:
        return self.value >= 1.0

    @property
    def text(self) -> str:
        """C{on}, C{off} or C{pwm 40%}: the reply's and the stream's words."""
        if self.pwm:
            return f"pwm {self.value * 100:g}%"
        return "on" if self.high else "off"

    @property
    def token(self) -> str:
        """As C{outputs} lists it: C{on}, C{off} or C{pwm:40}."""
        return f"pwm:{self.value * 100:g}" if self.pwm else self.text


@dataclass(frozen=True)
class OutputSpec:
    """
    One declared output.

    @ivar pin: channel number in the numbering the backend uses.
    @ivar safe: the level at start-up, on C{stop}, when a deadman expires,
        and before the pin is released at shutdown.
    @ivar ttl: seconds a non-safe level lasts without a renewing command
        (a deadman), or C{None} (a latch: it stays as the last command left it).
    @ivar frequency: PWM frequency in Hz.
    """

    name: str
    pin: int
    safe: bool = False
    ttl: float | None = None
    frequency: float = DEFAULT_FREQUENCY

    @property
    def safe_level(self) -> Level:
        return Level.of(self.safe)

    def describe(self, numbering: str) -> str:
        """C{"motor on BOARD 16 (BCM 23), safe off, deadman 0.5 s"}."""
        bcm = to_bcm(numbering, self.pin)
        kind = f"deadman {self.ttl:g} s" if self.ttl is not None else "latch"
        return f"{self.name} on BOARD {BCM_TO_BOARD[bcm]} (BCM {bcm}), safe {'on' if self.safe else 'off'}, {kind}"


def _positive_number(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{what} must be a number of more than 0, got {text!r}")
    return number


def parse_output(value: str, numbering: str = "board", max_ttl: float | None = None) -> OutputSpec:
    """
    Parse C{NAME=PIN[,safe=off|on][,ttl=SECONDS][,freq=HZ]}.

    @param max_ttl: the longest C{ttl=} allowed (C{--max-ttl}).
    @raise ValueError: with a message saying which part is wrong and what is allowed.
    """
    name, sep, rest = value.partition("=")
    name = name.strip()
    if not sep or not name or not name.isidentifier():
        raise ValueError(f"expected NAME=PIN[,safe=off|on][,ttl=SECONDS][,freq=HZ], got {value!r}")
    pin_text, *settings = rest.split(",")
    if not pin_text.strip().isdigit():
        raise ValueError(f"pin of output {name!r} must be a number, got {pin_text!r}")
    pin = int(pin_text)
    try:
        to_bcm(numbering, pin)
    except PinError as e:
        raise ValueError(f"output {name!r}: {e}") from None
    fields: dict[str, str] = {}
    for setting in settings:
        key, sep, setting_value = setting.partition("=")
        key = key.strip()
        if not sep or key not in ("safe", "ttl", "freq"):
            raise ValueError(f"output {name!r}: unknown setting {setting!r}; use safe=, ttl= or freq=")
        fields[key] = setting_value.strip()
    safe = fields.get("safe", "off")
    if safe not in ("off", "on"):
        raise ValueError(f"output {name!r}: safe must be off or on, got {safe!r}")
    ttl = None
    if "ttl" in fields:
        ttl = _positive_number(fields["ttl"], f"output {name!r}: ttl")
        if max_ttl is not None and ttl > max_ttl:
            raise ValueError(f"output {name!r}: ttl={ttl:g} is over --max-ttl {max_ttl:g}")
    frequency = DEFAULT_FREQUENCY
    if "freq" in fields:
        frequency = _positive_number(fields["freq"], f"output {name!r}: freq")
    return OutputSpec(name, pin, safe == "on", ttl, frequency)


def describe_outputs(outputs, numbering: str) -> str:
    return "; ".join(spec.describe(numbering) for spec in outputs)
