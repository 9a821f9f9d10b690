"""
The table of commands C{serve} understands: each command's name, arguments,
help text and the permission a client needs, so that the help a client sees,
the checks and the dispatch come from one table. The commands themselves are
in L{rpisensor.roles.serve.commands} (reading and streaming),
L{rpisensor.roles.serve.pins}, L{rpisensor.roles.serve.simulate} and
L{rpisensor.roles.serve.control}.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rpisensor.roles.serve.connection import SensorServerProtocol


class Permission(enum.Enum):
    """What a client may do; the factory grants each connection its set."""

    #: Ask for the inputs' state: every client that may connect.
    READ = "read"
    #: Press and release simulated inputs: loopback clients, simulated pins only.
    SIMULATE = "simulate"
    #: Drive the declared outputs: clients with a control grant (--control-allow, --control-cert).
    CONTROL = "control"


Handler = Callable[["SensorServerProtocol", list[str]], None]


@dataclass(frozen=True)
class Command:
    """
    One command.

    @ivar usage: how it is written, e.g. C{"read NAME"}; the help text lists these.
    @ivar arguments: how many words may follow the name, as C{(fewest, most)}.
    @ivar refusal: the reply to a client without the permission.
    """

    name: str
    usage: str
    summary: str
    handler: Handler
    arguments: tuple[int, int] = (0, 0)
    permission: Permission = Permission.READ
    refusal: str = ""
    #: Said after the usage when the arguments are wrong.
    hint: str = ""
    #: The handler gets the text after the name as it came (a v2 frame's JSON),
    #: as one argument (C{""} when there is none), instead of words.
    raw: bool = False
    #: Whether C{help} lists it: the v2 frames a program sends are documented,
    #: not offered to a person typing commands.
    listed: bool = True

    def usage_error(self) -> str:
        if self.arguments == (0, 0):
            return f"error: {self.name} takes no arguments"
        return f"error: usage: {self.usage}" + (f" ({self.hint})" if self.hint else "")


class CommandRegistry:
    """The commands by name, in the order the help lists them."""

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        self._commands: dict[str, Command] = {}
        for command in commands:
            self.add(command)

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"command {command.name!r} is registered twice")
        self._commands[command.name] = command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def help_text(self, granted: frozenset[Permission]) -> str:
        """The help a client with C{granted} permissions sees: what it may send."""
        usable = [c.usage for c in self._commands.values() if c.listed and c.permission in granted]
        return "commands: " + " | ".join(usable)
