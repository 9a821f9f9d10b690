"""
C{rpisensor console ENDPOINT}: an interactive session with a server. Type
commands (line editing and history as in any terminal), see each reply,
and see every change the server pushes (inputs, outputs) as it happens;
C{repeat SECONDS COMMAND} keeps a deadman output alive until Enter.
"""

from __future__ import annotations

import signal

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.python import usage
from twisted.python.failure import Failure

from rpisensor.net.reconnect import ReadyEndpoint
from rpisensor.net.request import RequestProtocol
from rpisensor.roles._options.base import check_client_endpoint, positive_seconds


class ConsoleOptions(usage.Options):
    synopsis = "[options] ENDPOINT"
    longdesc = (
        "Talk to a sensor server interactively: each line typed is a command (help lists them), "
        "its reply is shown, and so is every change the server pushes (its inputs and outputs), "
        "as it happens. 'repeat SECONDS COMMAND' sends a command again and again until Enter or "
        "Ctrl-C, to keep a deadman output alive; 'quit' or Ctrl-D leaves. ENDPOINT is a Twisted "
        "client endpoint or HOST:PORT. Example: rpisensor console raspberrypi.local:22000"
    )
    optFlags = [
        ["no-events", None, "Do not subscribe to the server's changes: replies only."],
    ]
    optParameters = [
        ["timeout", "t", "10", "Seconds to wait for the connection."],
    ]

    def parseArgs(self, endpoint: str) -> None:
        self["endpoint"] = check_client_endpoint("endpoint", endpoint, label="endpoint")

    def postOptions(self) -> None:
        self["timeout"] = positive_seconds("timeout", self["timeout"])


def _connect(reactor, endpoint: str, protocol, timeout: float) -> Deferred:
    ready = ReadyEndpoint(clientFromString(reactor, endpoint), endpoint)
    return connectProtocol(ready, protocol).addTimeout(timeout, reactor)


async def run_console(reactor, options: ConsoleOptions, terminal=None) -> None:
    """The console, until the user leaves (exit 0) or the server closes the connection (exit 1)."""
    from rpisensor.roles.console.events import EventsProtocol
    from rpisensor.roles.console.session import Console
    from rpisensor.roles.console.terminal import Terminal
    from rpisensor.roles.query import _explain

    endpoint, timeout = options["endpoint"], options["timeout"]
    terminal = terminal if terminal is not None else Terminal(reactor)
    try:
        commands = await _connect(reactor, endpoint, RequestProtocol(), timeout)
    except Exception:
        terminal.show(f"rpisensor console: {_explain(Failure(), endpoint, timeout)}")
        raise SystemExit(1) from None
    events = None
    if not options["no-events"]:
        try:
            events = await _connect(reactor, endpoint, EventsProtocol(terminal.show), timeout)
        except Exception:
            terminal.show(f"console: no pushed events: {_explain(Failure(), endpoint, timeout)}")
    finished: Deferred[int] = Deferred()
    console = Console(reactor, commands, terminal.show, finished.callback)
    commands.lost.addCallback(lambda _: console.connection_lost("the server closed the connection"))
    terminal.show(
        f"console: connected to {endpoint}. Type help for the commands; repeat SECONDS COMMAND "
        "repeats one until Enter; quit or Ctrl-D leaves."
    )
    if terminal.interactive:
        previous = signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(console.interrupt))
    terminal.start(console.line, console.end_of_input)
    try:
        status = await finished
    finally:
        if terminal.interactive:
            signal.signal(signal.SIGINT, previous)
        terminal.close()
        for connection in (commands, events):
            if connection is not None and connection.transport is not None:
                connection.transport.loseConnection()
    if status:
        raise SystemExit(status)
