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

from rpisensor.net.peers import is_loopback
from rpisensor.sensing.sample import UnknownInput
from rpisensor.wire import v2

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


# -- the handlers: each takes the connection and the words after the name ----


def _go(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply_with_reading(connection.factory.reader.first.name)


def _read(connection: SensorServerProtocol, args: list[str]) -> None:
    reader = connection.factory.reader
    if args[0] not in reader.inputs and args[0] not in reader.sensors:
        connection.reply(f"error: {UnknownInput(args[0], reader.names)}")
    else:
        connection.reply_with_reading(args[0])


def list_text(reader) -> str:
    """
    The C{list} reply: the inputs' names, then each sensor as C{NAME(KIND,UNIT)}
    (C{room(w1,°C)}), separated by spaces: C{button door room(w1,°C)}.
    """
    sensors = [f"{s.name}({s.kind}{',' + s.unit if s.unit else ''})" for s in reader.sensors.values()]
    return " ".join([*reader.inputs, *sensors])


def _list(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply(list_text(connection.factory.reader))


def _ping(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply("pong")


def _help(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply(connection.factory.commands.help_text(connection.granted))


READ_COMMANDS = (
    Command("go", "go", "the first input's text", _go),
    Command("read", "read NAME", "that input's text, or that sensor's value and unit", _read, arguments=(1, 1),
            hint="send 'list' for the names"),
    Command("list", "list", "the input names, and the sensors with their kind and unit", _list),
    Command("ping", "ping", "pong", _ping),
    Command("help", "help", "the commands this client may send", _help),
)

# -- the event stream (protocol v2): hello, subscribe, and the journal's status ----

NO_JOURNAL = "error: this server keeps no journal, so it cannot stream; use go or read NAME"


def _frame(name: str, args: list[str]):
    """The v2 frame C{name ARGS}, or raise L{v2.FrameError}."""
    return v2.parse(f"{name} {args[0]}" if args[0] else name)


def _stream_frame(connection: SensorServerProtocol, name: str, args: list[str]):
    """The v2 frame a stream command came as, or C{None} once the client was told why not."""
    if connection.factory.publishing is None:
        connection.reply(NO_JOURNAL)
        return None
    try:
        return _frame(name, args)
    except v2.FrameError as e:
        connection.reply(f"error: {e}")
        return None


def _hello(connection: SensorServerProtocol, args: list[str]) -> None:
    hello = _stream_frame(connection, "hello", args)
    if hello is None:
        return
    publishing = connection.factory.publishing
    if hello.role != "subscribe":
        # A v2 refusal, not an error line: a reporter pointed here backs off and says why,
        # instead of taking serve for a plain-text server and sending it text.
        connection.reply(v2.encode(v2.Refused(
            "this is serve, the Pi's sensor server: it takes subscribers (hello role 'subscribe'); "
            "a reporter sends to a collector (twistd rpisensor collect), on another port"
        )))  # fmt: skip
        connection.closeAfterWork()
    elif connection.subscription is not None:
        connection.reply("error: hello: already answered; send subscribe")
    elif not publishing.has_room():
        connection.reply(publishing.busy_reply())
    else:
        connection.reply(connection.start_subscription(hello.heartbeat, announced=True).welcome())


def _subscribe(connection: SensorServerProtocol, args: list[str]) -> None:
    subscribe = _stream_frame(connection, "subscribe", args)
    if subscribe is None:
        return
    publishing = connection.factory.publishing
    if not publishing.has_room():
        connection.reply(publishing.busy_reply())
        return
    subscription = connection.subscription or connection.start_subscription(None, announced=False)
    subscription.subscribe(subscribe.after, subscribe.digest)


def _heartbeat(connection: SensorServerProtocol, args: list[str]) -> None:
    if args[0]:
        connection.reply("error: heartbeat takes nothing after it")
    # else: a v2 frame, not a command: no reply (hearing it was enough)


def _ack(connection: SensorServerProtocol, args: list[str]) -> None:
    connection.reply("error: ack: nothing was sent to acknowledge; send subscribe first")


def _status(connection: SensorServerProtocol, args: list[str]) -> None:
    publishing = connection.factory.publishing
    if publishing is None:
        connection.reply(NO_JOURNAL)
    else:
        connection.reply_when(publishing.status(peers=may_see_peers(connection)))


def may_see_peers(connection: SensorServerProtocol) -> bool:
    """
    Whether C{status} shows this client the subscribers' addresses: only a client on
    this machine or one with the control grant (any client may read; not all may know who else does).
    """
    return Permission.CONTROL in connection.granted or is_loopback(connection.transport)


STREAM_COMMANDS = (
    Command("hello", 'hello {"v":2,"role":"subscribe"}', "start protocol v2: answered with welcome",
            _hello, raw=True, listed=False),
    Command("subscribe", 'subscribe [{"after":N}]',
            "stream every change: a snapshot (or the readings after N), then live", _subscribe, raw=True),
    Command("ack", 'ack {"seq":N}', "the subscriber has everything up to N", _ack, raw=True, listed=False),
    Command("heartbeat", "heartbeat", "the link is alive", _heartbeat, raw=True, listed=False),
    Command("status", "status", "the journal and its subscribers", _status),
)  # fmt: skip

#: The help text a client that may only read gets.
HELP_TEXT = CommandRegistry((*READ_COMMANDS, *STREAM_COMMANDS)).help_text(frozenset({Permission.READ}))


def default_commands(outputs: bool = False) -> CommandRegistry:
    """
    A registry with every command C{serve} knows; the control commands only
    when it has C{outputs} (without, they are unknown commands).
    """
    from rpisensor.roles.serve.pins import PINS_COMMAND
    from rpisensor.roles.serve.simulate import SIMULATE_COMMANDS

    commands = [*READ_COMMANDS, PINS_COMMAND, *STREAM_COMMANDS, *SIMULATE_COMMANDS]
    if outputs:
        from rpisensor.roles.serve.control import CONTROL_COMMANDS, OUTPUTS_COMMAND

        commands += [OUTPUTS_COMMAND, *CONTROL_COMMANDS]
    return CommandRegistry(commands)
