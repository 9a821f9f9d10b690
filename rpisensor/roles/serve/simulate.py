"""
Pressing simulated inputs from outside the process: the C{sim} command (the
demo patterns that press an input by themselves are in L{rpisensor.sensing.patterns}).

Only with simulated pins, and only for clients on this machine: a real pin
is driven by wiring, never by a network peer.
"""

from __future__ import annotations

from rpisensor.hw.interfaces import LevelChange
from rpisensor.sensing.patterns import drive
from rpisensor.roles.serve.registry import Command, Permission
from rpisensor.sensing.sample import UnknownInput

ACTIONS = ("press", "release", "toggle")


def _sim(connection, args: list[str]) -> None:
    name, action = args[0], args[1].lower()
    reader = connection.factory.reader
    if name not in reader.inputs:
        connection.reply(f"error: {UnknownInput(name, reader.inputs)}")
        return
    if action not in ACTIONS:
        connection.reply(f"error: sim takes press, release or toggle, got {action!r}")
        return
    spec = reader.inputs[name]
    active = drive(reader.backend, spec, action)
    state = connection.factory.state
    if state is not None and name in state.tracked and not spec.debounce:
        # A "go" right behind this command, in the same read, must see the press;
        # the pin's edge comes through the reactor a turn later. (With a debounce
        # the change counts only once it held, as on a real pin.)
        high = active != spec.active_low
        state.learn(LevelChange(reader.wall(), spec.pin, high))
    connection.reply(spec.active_text if active else spec.inactive_text)


SIMULATE_COMMANDS = (
    Command(
        "sim",
        "sim NAME press|release|toggle",
        "drive a simulated input",
        _sim,
        arguments=(2, 2),
        permission=Permission.SIMULATE,
        refusal=(
            "error: sim is only for simulated pins (--gpio sim), from a client on the same "
            "machine (loopback)"
        ),
    ),
)
