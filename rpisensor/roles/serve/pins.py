"""
The C{pins} command: which pins C{serve} reads and drives, in BCM numbers,
with their wiring and limits, and whether this client may drive them; what
a remote pin factory (L{rpisensor.gpiozero}) needs to map a program's
C{Button(17)} onto a declared input. Every client that may read gets it.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from rpisensor.hw.pins import to_bcm
from rpisensor.roles.serve.registry import Command, Permission
from rpisensor.wire import layout

CPUINFO = Path("/proc/cpuinfo")


@cache
def board_revision(cpuinfo: Path = CPUINFO) -> str | None:
    """The Pi's board revision code (C{d04170}), or C{None} where there is none to read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"^Revision\s*:\s*([0-9a-fA-F]{1,8})\s*$", text, re.MULTILINE)
    return found.group(1).lower() if found else None


def pin_layout(factory, granted) -> layout.PinLayout:
    """What the server behind C{factory} offers a client with permissions C{granted}."""
    reader = factory.reader
    numbering = reader.backend.numbering
    inputs = tuple(
        layout.InputPin(spec.name, to_bcm(numbering, spec.pin), spec.pull, spec.active_low, spec.debounce)
        for spec in reader.inputs.values()
    )
    controller = factory.controller
    outputs = ()
    if controller is not None:
        outputs = tuple(
            layout.OutputPin(spec.name, to_bcm(numbering, spec.pin), spec.safe, spec.ttl, spec.frequency)
            for spec in controller.specs
        )
    return layout.PinLayout(
        inputs=inputs,
        outputs=outputs,
        sensors=tuple(layout.SensorInfo(spec.name, spec.unit) for spec in reader.sensors.values()),
        pwm=controller is not None and controller.pwm_capable,
        control=Permission.CONTROL in granted,
        revision=board_revision(),
    )


def _pins(connection, args: list[str]) -> None:
    connection.reply(layout.encode(pin_layout(connection.factory, connection.granted)))


#: Not in C{help}: a program's question (docs/reference/protocol.md documents it), as the v2 frames are.
PINS_COMMAND = Command(
    "pins", "pins", "the pins this server reads and drives, as JSON (for remote pins)", _pins, listed=False
)
