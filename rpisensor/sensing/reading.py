"""
What a read gives: the level of one named input, and when it was read.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpisensor.sensing.inputs import InputSpec


class UnknownInput(KeyError):
    """No input has the requested name."""

    def __init__(self, name: str, names) -> None:
        super().__init__(name)
        self.names = list(names)

    def __str__(self) -> str:
        return f"no input named {self.args[0]!r}; inputs are: {', '.join(self.names)}"


@dataclass(frozen=True)
class Reading:
    """
    The level of one input, and when the backend returned it: the reader's
    clock seconds as the worker thread saw them, not when the result reached
    the reactor (for a reactor, wall time, comparable with its C{seconds()}).
    """

    input: InputSpec
    high: bool
    time: float

    @property
    def text(self) -> str:
        return self.input.text_for(self.high)
