"""
The commands every client of C{serve} may send: reading the inputs and
sensors (C{go}, C{read}, C{list}, C{ping}, C{help}) and the event stream
(C{hello}, C{subscribe}, C{ack}, C{heartbeat}, C{status}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rpisensor.net.connection import Pause
from rpisensor.net.peers import is_loopback
from rpisensor.roles.serve.registry import Command, CommandRegistry, Permission
from rpisensor.roles.serve.subscription import Subscription
from rpisensor.sensing.sample import UnknownInput
from rpisensor.wire import v2

if TYPE_CHECKING:
    from rpisensor.roles.serve.connection import SensorServerProtocol


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


def _start_subscription(connection: SensorServerProtocol, heartbeat: float | None, announced: bool) -> Subscription:
    """The connection's v2 session (see L{Subscription}), after hello or subscribe."""
    subscription = Subscription(connection, connection.factory.publishing, connection.factory.clock, heartbeat, announced)
    connection.subscription = subscription
    if connection.paused & Pause.WRITES:
        subscription.pause()
    return subscription


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
        connection.reply(_start_subscription(connection, hello.heartbeat, announced=True).welcome())


def _subscribe(connection: SensorServerProtocol, args: list[str]) -> None:
    subscribe = _stream_frame(connection, "subscribe", args)
    if subscribe is None:
        return
    publishing = connection.factory.publishing
    if not publishing.has_room():
        connection.reply(publishing.busy_reply())
        return
    subscription = connection.subscription or _start_subscription(connection, None, announced=False)
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
