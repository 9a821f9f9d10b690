"""
Named inputs: which pin, how it is pulled, which level means "active", and the
text sent for each state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from rpisensor.hw.interfaces import PULLS, PinError
from rpisensor.hw.pins import BCM_TO_BOARD, to_bcm


@dataclass(frozen=True)
class InputSpec:
    """
    One named digital input.

    @ivar pin: channel number in the numbering the backend uses.
    @ivar pull: C{'up'}, C{'down'} or C{'off'}.
    @ivar active_low: C{True} when a low level means active (a button to ground
        with a pull-up, as in the tutorial).
    @ivar active_text: sent when the input is active, e.g. C{"Button pressed"}.
    @ivar inactive_text: sent otherwise, e.g. C{"Button released"}.
    @ivar debounce: seconds a new level must hold before it counts as a
        change (0: every change counts). The kernel applies it for the gpiod
        backend; for polled backends, the sampler does, across its samples.
    """

    name: str
    pin: int
    pull: str = "up"
    active_low: bool = True
    active_text: str = "Button pressed"
    inactive_text: str = "Button released"
    debounce: float = 0.0

    def text_for(self, high: bool) -> str:
        """The text for a pin level: active when the level is the active one."""
        return self.active_text if high != self.active_low else self.inactive_text

    def describe(self, numbering: str) -> str:
        """
        Its wiring in words, its pin in both numberings (C{numbering} is the
        one C{pin} is in): C{"button on BOARD 24 (BCM 8), pull up, active low"}.
        """
        bcm = to_bcm(numbering, self.pin)
        active = "low" if self.active_low else "high"
        return f"{self.name} on BOARD {BCM_TO_BOARD[bcm]} (BCM {bcm}), pull {self.pull}, active {active}"


#: The tutorial's button: BOARD pin 24, pull-up, pressed pulls it low.
DEFAULT_INPUT = InputSpec("button", 24)


def default_input(numbering: str) -> InputSpec:
    """
    The tutorial's button in C{numbering}: always the same physical pin,
    BOARD 24, which is BCM 8.
    """
    if numbering == "bcm":
        return replace(DEFAULT_INPUT, pin=to_bcm("board", DEFAULT_INPUT.pin))
    return DEFAULT_INPUT


def describe_inputs(inputs: Iterable[InputSpec], numbering: str) -> str:
    """Every input's L{InputSpec.describe}, joined with semicolons."""
    return "; ".join(spec.describe(numbering) for spec in inputs)


def default_texts(name: str) -> tuple[str, str]:
    """The tutorial's texts for C{button}, C{"<name> active/inactive"} otherwise."""
    if name == "button":
        return DEFAULT_INPUT.active_text, DEFAULT_INPUT.inactive_text
    return f"{name} active", f"{name} inactive"


def parse_input(value: str, numbering: str = "board") -> InputSpec:
    """
    Parse C{NAME=PIN[,pull=up|down|off][,active=low|high][,on=TEXT][,off=TEXT][,debounce=MS]}.

    @raise ValueError: with a message saying which part is wrong and what is allowed.
    """
    name, sep, rest = value.partition("=")
    name = name.strip()
    if not sep or not name or not name.isidentifier():
        raise ValueError(f"expected NAME=PIN[,pull=up|down|off][,active=low|high], got {value!r}")
    pin_text, *settings = rest.split(",")
    if not pin_text.strip().isdigit():
        raise ValueError(f"pin of input {name!r} must be a number, got {pin_text!r}")
    pin = int(pin_text)
    try:
        to_bcm(numbering, pin)
    except PinError as e:
        raise ValueError(f"input {name!r}: {e}") from None
    active_text, inactive_text = default_texts(name)
    fields = {"pull": "up", "active": "low", "on": active_text, "off": inactive_text, "debounce": "0"}
    for setting in settings:
        key, sep, setting_value = setting.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(
                f"input {name!r}: unknown setting {setting!r}; use pull=, active=, on=, off= or debounce="
            )
        fields[key] = setting_value.strip() if key in ("pull", "active", "debounce") else setting_value
    if fields["pull"] not in PULLS:
        raise ValueError(f"input {name!r}: pull must be up, down or off, got {fields['pull']!r}")
    if fields["active"] not in ("low", "high"):
        raise ValueError(f"input {name!r}: active must be low or high, got {fields['active']!r}")
    for key in ("on", "off"):
        if "\0" in fields[key] or not fields[key]:
            raise ValueError(f"input {name!r}: {key}= text must be non-empty and contain no NUL")
    if not fields["debounce"].isdigit() or int(fields["debounce"]) > 10_000:
        raise ValueError(
            f"input {name!r}: debounce= is whole milliseconds from 0 to 10000, got {fields['debounce']!r}"
        )
    return InputSpec(
        name,
        pin,
        pull=fields["pull"],
        active_low=fields["active"] == "low",
        active_text=fields["on"],
        inactive_text=fields["off"],
        debounce=int(fields["debounce"]) / 1000,
    )
