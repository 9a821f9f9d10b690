"""
The C{pins} reply: which pins C{serve} reads and drives, and how, for a
program that uses them remotely (the gpiozero pin factory). Pure functions
and frozen dataclasses: L{encode} writes it, L{parse} reads it back or
raises L{LayoutError} saying what is wrong.

    pins {"inputs":[{"name":"button","gpio":8,"pull":"up","active":"low","debounce":0}],
          "outputs":[{"name":"led","gpio":18,"safe":"off","ttl":null,"freq":100}],
          "sensors":[{"name":"room","unit":"°C"}],"pwm":true,"control":false,"revision":"d04170"}

Pins are Broadcom (BCM) GPIO numbers, whatever C{--numbering} the server
uses: the numbers gpiozero's C{Button(17)} means.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from rpisensor.wire.framing import MessageError

VERB = "pins"
_PULLS = ("up", "down", "off")


class LayoutError(MessageError):
    """A C{pins} reply that cannot be used; the message says why."""


@dataclass(frozen=True)
class InputPin:
    """
    A declared input (C{--input}).

    @ivar gpio: its BCM number.
    @ivar active_low: a low level is its active state (a button to ground).
    @ivar debounce: seconds a new level must hold on the Pi before it counts.
    """

    name: str
    gpio: int
    pull: str = "up"
    active_low: bool = True
    debounce: float = 0.0


@dataclass(frozen=True)
class OutputPin:
    """
    A declared output (C{--output}).

    @ivar safe: the level it returns to (C{True}: high).
    @ivar ttl: its own deadman time in seconds, or C{None} for a latch.
    @ivar frequency: its PWM frequency in Hz.
    """

    name: str
    gpio: int
    safe: bool = False
    ttl: float | None = None
    frequency: float = 100.0


@dataclass(frozen=True)
class SensorInfo:
    """A measurement sensor (C{--sensor}): its name and unit (C{""}: none)."""

    name: str
    unit: str = ""


@dataclass(frozen=True)
class PinLayout:
    """
    What one server offers one client.

    @ivar pwm: its pins can do PWM (C{pwm NAME DUTY}).
    @ivar control: this client holds the control grant (it may drive the outputs).
    @ivar revision: the Pi's board revision code (hex, from C{/proc/cpuinfo}),
        or C{None} where the server runs on something else.
    """

    inputs: tuple[InputPin, ...] = ()
    outputs: tuple[OutputPin, ...] = ()
    sensors: tuple[SensorInfo, ...] = ()
    pwm: bool = False
    control: bool = False
    revision: str | None = None


def encode(layout: PinLayout) -> str:
    """The reply's text (without its NUL)."""
    body = {
        "inputs": [
            {"name": p.name, "gpio": p.gpio, "pull": p.pull, "active": "low" if p.active_low else "high",
             "debounce": round(p.debounce * 1000)}
            for p in layout.inputs
        ],
        "outputs": [
            {"name": p.name, "gpio": p.gpio, "safe": "on" if p.safe else "off", "ttl": p.ttl, "freq": p.frequency}
            for p in layout.outputs
        ],
        "sensors": [{"name": s.name, "unit": s.unit} for s in layout.sensors],
        "pwm": layout.pwm,
        "control": layout.control,
        "revision": layout.revision,
    }  # fmt: skip
    return f"{VERB} " + json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def parse(text: str) -> PinLayout:
    """
    The layout in a C{pins} reply.

    @raise LayoutError: it is an C{error:} reply, not a C{pins} reply, or a
        field is missing or wrong; the message says which.
    """
    verb, _, rest = text.partition(" ")
    if verb != VERB:
        if text.startswith("error: unknown command"):
            raise LayoutError("the server does not answer 'pins': it is older than remote pins; upgrade it")
        raise LayoutError(f"expected a pins reply, got {text[:120]!r}")
    try:
        body = json.loads(rest)
    except ValueError as e:
        raise LayoutError(f"pins: the text after it is not JSON ({str(e)[:80]})") from None
    if not isinstance(body, dict):
        raise LayoutError("pins: expected a JSON object")
    return PinLayout(
        inputs=tuple(_input(item) for item in _list(body, "inputs")),
        outputs=tuple(_output(item) for item in _list(body, "outputs")),
        sensors=tuple(SensorInfo(_text(item, "name"), _text(item, "unit", "")) for item in _list(body, "sensors")),
        pwm=_flag(body, "pwm"),
        control=_flag(body, "control"),
        revision=_revision(body.get("revision")),
    )


def _list(body: dict, key: str) -> list[dict]:
    items = body.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LayoutError(f"pins: {key!r} must be a list of objects")
    return items


def _text(item: dict, key: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise LayoutError(f"pins: {key!r} must be text, got {value!r}")
    return value


def _gpio(item: dict) -> int:
    value = item.get("gpio")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 53:
        raise LayoutError(f"pins: 'gpio' of {item.get('name')!r} must be a BCM number, got {value!r}")
    return value


def _number(item: dict, key: str, default: float | None) -> float | None:
    value = item.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LayoutError(f"pins: {key!r} of {item.get('name')!r} must be a number of 0 or more, got {value!r}")
    return float(value)


def _choice(item: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = item.get(key, default)
    if value not in choices:
        raise LayoutError(f"pins: {key!r} of {item.get('name')!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise LayoutError(f"pins: {key!r} must be true or false, got {value!r}")
    return value


def _revision(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 8 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise LayoutError(f"pins: 'revision' must be a hex board revision, got {value!r}")
    return value.lower()


def _input(item: dict) -> InputPin:
    return InputPin(
        _text(item, "name"), _gpio(item), _choice(item, "pull", _PULLS, "up"),
        _choice(item, "active", ("low", "high"), "low") == "low", (_number(item, "debounce", 0) or 0) / 1000,
    )  # fmt: skip


def _output(item: dict) -> OutputPin:
    frequency = _number(item, "freq", 100.0)
    ttl = _number(item, "ttl", None)
    return OutputPin(
        _text(item, "name"), _gpio(item), _choice(item, "safe", ("on", "off"), "off") == "on",
        ttl if ttl else None, frequency or 100.0,
    )  # fmt: skip
