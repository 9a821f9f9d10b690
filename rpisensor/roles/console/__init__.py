"""
C{rpisensor console ENDPOINT}: an interactive session with a server. Type
commands (line editing and history as in any terminal), see each reply,
and see every change the server pushes (inputs, outputs) as it happens;
C{repeat SECONDS COMMAND} keeps a deadman output alive until Enter. Both
connections come back by themselves when they drop.
"""

from __future__ import annotations

import signal

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from rpisensor.net.reconnect import reconnecting_client
from rpisensor.net.request import RequestProtocol
from rpisensor.roles._options.base import OptionsAnywhere, check_client_endpoint, positive_seconds
from rpisensor.net.wording import plain_reason


class ConsoleOptions(OptionsAnywhere):
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
        ["timeout", "t", "10", "Seconds to wait for the first connection."],
    ]

    def parseArgs(self, endpoint: str) -> None:
        self["endpoint"] = check_client_endpoint("endpoint", endpoint, label="endpoint")

    def postOptions(self) -> None:
        self["timeout"] = positive_seconds("timeout", self["timeout"])


class _Commands(RequestProtocol):
    """The console's command connection: it tells the console when it is there and when it is gone."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.made(self)

    def connectionLost(self, reason: Failure = None) -> None:
        if reason is None:
            super().connectionLost()
        else:
            super().connectionLost(reason)
        self.factory.lost(self, reason)


class _CommandsFactory(Factory):
    """Builds L{_Commands}; C{made} and C{lost} are the console's."""

    protocol = _Commands
    noisy = False

    def __init__(self, clock, made, lost) -> None:
        self.clock, self.made, self.lost = clock, made, lost


async def run_console(reactor, options: ConsoleOptions, terminal=None) -> None:
    """The console, until the user leaves (exit 0), or its first connection fails (exit 1)."""
    from rpisensor.remote.follow import FollowFactory
    from rpisensor.roles.console.events import ConsoleEvents
    from rpisensor.roles.console.session import Console
    from rpisensor.roles.console.terminal import Terminal
    from rpisensor.roles.query import _explain

    endpoint, timeout = options["endpoint"], options["timeout"]
    terminal = terminal if terminal is not None else Terminal(reactor)
    finished: Deferred[int] = Deferred()
    console = Console(reactor, None, terminal.show, finished.callback)
    state = {"first": True}

    def made(protocol: _Commands) -> None:
        again = None if state["first"] else f"connected to {endpoint} again"
        state["first"] = False
        console.connected(protocol, again)

    def lost(protocol: _Commands, reason) -> None:
        why = plain_reason(reason) if reason is not None else "the connection ended"
        console.connection_lost(f"lost the connection to {endpoint} ({why}); reconnecting")

    commands = reconnecting_client(reactor, endpoint, _CommandsFactory(reactor, made, lost))
    commands.startService()
    try:
        await commands.whenConnected(failAfterFailures=1).addTimeout(timeout, reactor)
    except Exception:
        failure = Failure()
        await commands.stopService()
        terminal.show(f"rpisensor console: {_explain(failure, endpoint, timeout)}")
        raise SystemExit(1) from None
    events = None
    if not options["no-events"]:
        def give_up() -> None:
            if events is not None and events.running:
                events.stopService()

        follow = FollowFactory(ConsoleEvents(terminal.show, give_up), reactor)
        events = reconnecting_client(reactor, endpoint, follow)
        events.startService()
    terminal.show(
        f"console: connected to {endpoint}. Type help for the commands; repeat SECONDS COMMAND "
        "repeats one until Enter; quit or Ctrl-D leaves."
    )
    if terminal.interactive:
        previous = signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(console.interrupt))
    terminal.start(console.line, console.end_of_input, console.output_closed)
    try:
        status = await finished
    finally:
        if terminal.interactive:
            signal.signal(signal.SIGINT, previous)
        terminal.close()
        for service in (commands, events):
            if service is not None and service.running:
                await service.stopService()
    if status:
        raise SystemExit(status)
