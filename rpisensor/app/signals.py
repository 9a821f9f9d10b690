"""
A clean exit on SIGTERM and SIGINT under twistd.

twistd's own handlers stop the reactor and then re-raise the signal, so a
clean stop ends with status -15; service managers and scripts that check for
0 then report a failure. These handlers stop the reactor the same way
(services stop, data is flushed) and let twistd exit 0.

Before the reactor runs (the role's modules still importing, its files
opening) Ctrl-C would raise C{KeyboardInterrupt} wherever the start-up is,
a traceback of thirty lines; from the moment twistd has read rpisensor's
options it ends the start-up with one line instead.
"""

from __future__ import annotations

import signal
import sys

from twisted.application.service import Service
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger


def stop_quietly_while_starting() -> None:
    """
    Until the reactor installs its own handlers: Ctrl-C ends the start-up
    with one line and status 130, not a traceback. Only where SIGINT has
    Python's own handler (not ignored, not someone else's).
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def _interrupted_while_starting(number, frame) -> None:
    print("rpisensor: stopped by Ctrl-C while starting", file=sys.stderr)
    raise SystemExit(130)


class ExitCleanlyOnSignals(Service):
    """
    Installs the handlers once the reactor runs (after twistd installed its
    own). Started before the role, it also takes SIGTERM while the role's
    services start: the program then stops cleanly once they have, as after
    (without it that SIGTERM would end it at once, with status -15).
    """

    _log = Logger()
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        if not self._reactor.running:
            # The reactor's own handler replaces this one as it starts; _install, just after.
            signal.signal(signal.SIGTERM, self._stop)
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        for number in self.SIGNALS:
            signal.signal(number, self._stop)

    def _stop(self, number, frame) -> None:
        # Only hand over to the reactor here: logging from a signal handler can
        # re-enter a log file that was being written.
        self._reactor.callFromThread(self._stop_once, signal.Signals(number).name)

    _stopping = False

    def _stop_once(self, name: str) -> None:
        if self._stopping:
            # The reactor is already stopping: stopping it again would raise
            # ReactorNotRunning. The stop is bounded by the roles' own deadlines.
            self._log.info(
                "Received {signal} again: already stopping, once the work in flight is done "
                "(send SIGKILL to stop at once, losing it).",
                signal=name,
            )
            return
        self._stopping = True
        self._log.info("Received {signal}: finishing work in flight, then stopping.", signal=name)
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass  # it was stopping already, for another reason
