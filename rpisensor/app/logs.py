"""
twistd's log, as the rpisensor roles use it: twistd's own observer (the file
of C{--logfile}, C{--syslog}, or stdout with C{-n}) without debug lines,
which are for developers (set C{RPISENSOR_DEBUG=1} to see them); and, as a
daemon, a log file per role (C{rpisensor-serve.log}), as the pid file, so
that two roles running in one directory do not write one C{twistd.log}.
"""

from __future__ import annotations

import os

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
)

#: twistd's options, kept for L{observer}, which twistd calls with no arguments.
_twistd_options: dict | None = None

#: What C{--logger} names, when the user named no logger of their own.
OBSERVER = "rpisensor.app.logs.observer"


def choose(twistd_options, role: str) -> None:
    """
    Set twistd's C{--logger} (unless given) to L{observer}, and, for a
    daemon, C{--logfile} (unless given) to C{rpisensor-ROLE.log}.
    """
    global _twistd_options
    if not twistd_options.get("logfile") and not twistd_options.get("nodaemon") and not twistd_options.get("syslog"):
        twistd_options["logfile"] = f"rpisensor-{role}.log"
    if twistd_options.get("logger") is None:
        _twistd_options = dict(twistd_options)
        twistd_options["logger"] = OBSERVER


def observer() -> ILogObserver:
    """twistd's own log observer for these options, without debug lines unless C{RPISENSOR_DEBUG} is set."""
    from twisted.scripts.twistd import _SomeApplicationRunner

    options = dict(_twistd_options or {}, logger=None)
    default = _SomeApplicationRunner.loggerFactory(options)._getLogObserver()
    if not ILogObserver.providedBy(default):
        default = LegacyLogObserverWrapper(default)  # --syslog's
    if os.environ.get("RPISENSOR_DEBUG"):
        return default
    return FilteringLogObserver(default, [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])
