"""
The twistd plugin's entry points, C{Options} and C{makeService}: a table of
roles, each with its options class and the function that builds its service.

Only the chosen role's service module is imported; option classes are light
(no reactor, no network stack), so C{--help} stays fast.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module

from twisted.application.service import IService, MultiService
from twisted.python import usage

from rpisensor.roles.collect.options import CollectOptions
from rpisensor.roles.poll.options import PollOptions
from rpisensor.roles.report.options import ReportOptions
from rpisensor.roles.serve.options import ServeOptions

__all__ = ["Options", "makeService"]


@dataclass(frozen=True)
class Role:
    """One sub-command: its options, the C{module:function} that builds it, a summary."""

    name: str
    options: type[usage.Options]
    builder: str
    summary: str

    def make_service(self, options: usage.Options, reactor) -> IService:
        module, _, function = self.builder.partition(":")
        return getattr(import_module(module), function)(options, reactor)


ROLES = (
    Role("serve", ServeOptions, "rpisensor.roles.serve.service:make_service",
         "On the Pi: answer clients' 'go' with the inputs' state (the default)."),
    Role("poll", PollOptions, "rpisensor.roles.poll.service:make_service",
         "On the PC: send 'go' to a server every 2 s, log the replies."),
    Role("report", ReportOptions, "rpisensor.roles.report.service:make_service",
         "On the Pi: push the inputs' state to a server."),
    Role("collect", CollectOptions, "rpisensor.roles.collect.collector:make_service",
         "On the PC: accept reporters, log and store what they send."),
)  # fmt: skip
_ROLES = {role.name: role for role in ROLES}

#: twistd's own default pid file, which two roles in one directory would share.
_TWISTD_PIDFILE = "twistd.pid"


class Options(usage.Options):
    """C{twistd rpisensor}: one sub-command per role; C{serve} is the default."""

    synopsis = "[serve|poll|report|collect] [options]"
    longdesc = (
        "Raspberry Pi sensors over TCP: NUL-terminated UTF-8 messages, compatible with "
        "the 'TCP/IP communication' tutorial and its tcpcom library. Without a sub-command, "
        "runs 'serve' with its defaults: port 22000, the button on BOARD pin 24. "
        "'twistd rpisensor ROLE --help' shows one role's options."
    )
    subCommands = [[role.name, None, role.options, role.summary] for role in ROLES]
    defaultSubCommand = "serve"
    _usage_error: str | None = None

    def opt_version(self) -> None:
        """Show rpisensor's and Twisted's versions, then exit."""
        from rpisensor.roles._options.base import version_text

        print(version_text())
        raise SystemExit(0)

    def getUsage(self, width=None) -> str:
        """
        After a usage error, two lines: the synopsis and where the help is
        (twistd prints this before the error). For C{--help} without a role,
        every role's options, each block under its role's name.
        """
        if self._usage_error is not None:
            hint = f"'twistd rpisensor{self._role()} --help' lists every option."
            if self.parent is not None and getattr(self.parent, "synopsis", None) == self._synopsis():
                return hint  # twistd prints its synopsis, ours now, just before
            return f"{self._synopsis()}\n{hint}"
        if self.subCommand is not None:
            return super().getUsage(width)
        parts = [super().getUsage(width)]
        for role in ROLES:
            sub = role.options()
            sub.parent, self.subCommand = self, role.name
            try:
                block = sub.getUsage(width)
            finally:
                self.subCommand = None
            parts.append(f"== {role.name}: {role.summary}\n{block}")
        return "\n".join(parts)

    def parseOptions(self, options=None):
        """Let C{rpisensor --gpio sim} mean C{rpisensor serve --gpio sim}."""
        if options is None:
            options = sys.argv[1:]
        if options and options[0].startswith("-") and options[0] not in ("--help", "--version"):
            options = [self.defaultSubCommand, *options]
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            self._usage_error = str(e)
            if self.parent is not None:
                # twistd prints its own synopsis ("Usage: twistd [options]") above this
                # one's usage: make that one line ours, rather than print two.
                self.parent.synopsis = self._synopsis()
            raise

    def _role(self) -> str:
        return f" {self.subCommand}" if self.subCommand else ""

    def _synopsis(self) -> str:
        return f"Usage: twistd [twistd options] rpisensor{self._role()} [options]"

    def postOptions(self) -> None:
        if self.parent is not None and type(self.parent).__module__.startswith("twisted.scripts"):
            from rpisensor.app.signals import stop_quietly_while_starting

            stop_quietly_while_starting()
        self._choose_pidfile()
        if self.parent is not None:
            from rpisensor.app import logs

            logs.choose(self.parent, self.subCommand)

    def _choose_pidfile(self) -> None:
        """
        Under twistd, a pid file per role (C{rpisensor-serve.pid}) instead of
        twistd's one C{twistd.pid}, so that two roles can run side by side in
        one directory, as the tutorial's one-machine walkthrough does. An
        explicit C{--pidfile} is kept.
        """
        twistd = self.parent
        if twistd is not None and twistd.get("pidfile") == _TWISTD_PIDFILE:
            twistd["pidfile"] = f"rpisensor-{self.subCommand}.pid"


def makeService(options: Options) -> IService:
    """
    The service of the chosen role, which exits 0 on SIGTERM/SIGINT under
    twistd; the reactor schedules on a monotonic clock from now on (see
    L{rpisensor.app.clock}).
    """
    from twisted.internet import reactor

    from rpisensor.app.clock import schedule_on_monotonic
    from rpisensor.app.signals import ExitCleanlyOnSignals

    schedule_on_monotonic(reactor)  # a step of the wall clock moves no timer
    from rpisensor.roles._options import ListenOptions

    role = options.subOptions
    if isinstance(role, ListenOptions):
        from rpisensor.app.resources import ensure_file_limit

        ensure_file_limit(role["max-connections"])
    from rpisensor.app.systemd import SystemdNotifier

    top = RoleService(ExitCleanlyOnSignals(reactor), _ROLES[options.subCommand].make_service(role, reactor))
    SystemdNotifier(reactor, top).setServiceParent(top)  # last: told first that we stop
    return top


class RoleService(MultiService):
    """
    What C{makeService} returns: the chosen role's service, the signal
    handlers that let twistd exit 0 on SIGTERM, and systemd's notifications.

    @ivar role: the role's own service.
    """

    def __init__(self, signals: IService, role: IService) -> None:
        super().__init__()
        signals.setServiceParent(self)  # first: it takes SIGTERM while the role starts
        self.role = role
        role.setServiceParent(self)
