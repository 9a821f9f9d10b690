"""
The C{rpisensor} command, for scripts and debugging on the PC:
C{rpisensor query ENDPOINT MESSAGE...} (exit status: 0 when every reply came
and none is an C{error:} reply; 1 when one is, or the query failed; 2 for a
usage error; 130 on Ctrl-C), C{rpisensor console ENDPOINT}, interactive,
C{rpisensor watch ENDPOINT}, every reading as it comes, and C{rpisensor
audit STORE} (see L{rpisensor.store.audit}).
"""

from __future__ import annotations

import sys

from twisted.python import usage

from rpisensor.roles._options.base import VersionedOptions
from rpisensor.roles.console import ConsoleOptions
from rpisensor.roles.query import QueryOptions
from rpisensor.roles.watch import WatchOptions
from rpisensor.store.audit import AuditOptions


class Options(VersionedOptions):
    synopsis = "Usage: rpisensor"
    subCommands = [
        ["query", None, QueryOptions, "Send messages to a server, print the replies."],
        ["console", None, ConsoleOptions, "Type commands, see replies and pushed changes as they come."],
        ["watch", None, WatchOptions, "Print every reading of a Pi's stream as it comes, one line each."],
        ["audit", None, AuditOptions, "Check a store: per stream its seqs, holes and duplicates."],
    ]


def main(argv: list[str] | None = None) -> None:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
        if options.subCommand is None:
            raise usage.UsageError("say what to do, e.g. rpisensor query tcp:host=pi.local:port=22000 go")
    except usage.UsageError as e:
        command = f"rpisensor {options.subCommand}" if options.subCommand else "rpisensor"
        print(f"{command}: {e}\n'{command} --help' says more.", file=sys.stderr)
        raise SystemExit(2)
    if options.subCommand == "audit":
        from rpisensor.store.audit import run_audit

        raise SystemExit(run_audit(options.subOptions))
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    if options.subCommand == "console":
        from rpisensor.roles.console import run_console as run
    elif options.subCommand == "watch":
        from rpisensor.roles.watch import run_watch as run
    else:
        from rpisensor.roles.query import run_query as run

    from rpisensor.app.clock import schedule_on_monotonic

    def start(reactor):
        schedule_on_monotonic(reactor)  # timeouts and reconnects: a wall clock step moves none
        return Deferred.fromCoroutine(run(reactor, options.subOptions))

    react(start)


if __name__ == "__main__":
    main()
