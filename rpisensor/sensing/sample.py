"""
What a read gives, a L{Sample}: the L{InputLevel} of one named input, or the
L{Measurement} of one sensor, and when it was read. Both are "a named sensor
with a kind, a value and a unit" (C{name}, C{kind}, C{value}, C{unit},
C{text}), so the stream, C{serve} and C{report} treat buttons and
measurements alike. A sample is not yet a stream entry: the samplers turn
the ones worth keeping into L{rpisensor.entries.Reading}s.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpisensor.sensing.inputs import InputSpec
from rpisensor.sensing.measure import MeasurementSpec

#: The kind of a digital input (a measurement's kind is its spec's: w1, iio, file, cpu).
DIGITAL = "input"


class UnknownInput(KeyError):
    """No input or sensor has the requested name."""

    def __init__(self, name: str, names) -> None:
        super().__init__(name)
        self.names = list(names)

    def __str__(self) -> str:
        return f"no input named {self.args[0]!r}; inputs are: {', '.join(self.names)}"


@dataclass(frozen=True)
class InputLevel:
    """
    The level of one input, and when the backend returned it: the reader's
    clock seconds as the worker thread saw them, not when the result reached
    the reactor (for a reactor, wall time, comparable with its C{seconds()}).
    """

    input: InputSpec
    high: bool
    time: float

    kind = DIGITAL
    unit = None

    @property
    def name(self) -> str:
        return self.input.name

    @property
    def text(self) -> str:
        return self.input.text_for(self.high)

    @property
    def value(self) -> int:
        """1 when the input is active (as its text says), else 0."""
        return int(self.high != self.input.active_low)


@dataclass(frozen=True)
class Measurement:
    """One value of a measurement sensor, in its unit, and when it was read (as L{InputLevel})."""

    sensor: MeasurementSpec
    value: float
    time: float

    @property
    def name(self) -> str:
        return self.sensor.name

    @property
    def kind(self) -> str:
        return self.sensor.kind

    @property
    def unit(self) -> str | None:
        return self.sensor.unit or None

    @property
    def text(self) -> str:
        """E.g. C{22.56 °C}: what C{read NAME} answers and v1 sends."""
        return self.sensor.text_for(self.value)


#: Anything a read gives.
Sample = InputLevel | Measurement
