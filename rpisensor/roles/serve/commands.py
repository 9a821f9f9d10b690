"""
The commands C{serve} understands: a registry of name, arguments, help text
and the permission a client needs, so that the help a client sees, the
checks and the dispatch come from one table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rpisensor.sensing.reading import UnknownInput

if TYPE_CHECKING:
    from rpisensor.roles.serve.connection import SensorServerProtocol


class Permission(enum.Enum):
    """What a client may do; the factory grants each connection its set."""

    #: Ask for the inputs' state: every client that may connect.
    READ = "read"
    #: Press and release simulated inputs: loopback clients, simulated pins only.
    SIMULATE = "simulate"


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
        usable = [c.usage for c in self._commands.values() if c.permission in granted]
        return "commands: " + " | ".join(usable)


# -- the handlers: each takes the connection and the words after the name ----


def _go(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply_with_reading(connection.factory.reader.first.name)


def _read(connection: SensorServerProtocol, args: list[str]) -> None:
    inputs = connection.factory.reader.inputs
    if args[0] not in inputs:
        connection.reply(f"error: {UnknownInput(args[0], inputs)}")
    else:
        connection.reply_with_reading(args[0])


def _list(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply(" ".join(connection.factory.reader.inputs))


def _ping(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply("pong")


def _help(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply(connection.factory.commands.help_text(connection.granted))


READ_COMMANDS = (
    Command("go", "go", "the first input's text", _go),
    Command("read", "read NAME", "that input's text", _read, arguments=(1, 1),
            hint="send 'list' for the names"),
    Command("list", "list", "the input names", _list),
    Command("ping", "ping", "pong", _ping),
    Command("help", "help", "the commands this client may send", _help),
)

#: The help text a client that may only read gets.
HELP_TEXT = CommandRegistry(READ_COMMANDS).help_text(frozenset({Permission.READ}))


def default_commands() -> CommandRegistry:
    """A registry with every command C{serve} knows."""
    from rpisensor.roles.serve.simulate import SIMULATE_COMMANDS

    return CommandRegistry((*READ_COMMANDS, *SIMULATE_COMMANDS))
