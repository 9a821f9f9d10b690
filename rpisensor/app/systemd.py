"""
systemd's service notifications (C{Type=notify}): C{READY=1} once every
listener of the role listens, C{WATCHDOG=1} from the reactor every half
C{WATCHDOG_USEC} (a wedged reactor stops sending them, and systemd restarts
the service), C{STOPPING=1} when shutdown begins.

Written here rather than taken from a package: the protocol is one datagram
to the unix socket named by C{NOTIFY_SOCKET}, a few lines; C{sdnotify} has
not been maintained for years, and C{systemd-python} needs libsystemd's
headers and a C compiler on the Pi.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.application.service import IServiceCollection, Service
from twisted.internet.defer import gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rpisensor.net.listening import ListenerService

_log = Logger(namespace="rpisensor.app.systemd")


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send C{message} to systemd, if it asked for notifications; return whether it was sent."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as e:
        _log.warn("Could not tell systemd {message!r} through {address}: {error}",
                  message=message, address=environ["NOTIFY_SOCKET"], error=e.strerror or str(e))  # fmt: skip
        return False
    return True


def listeners_of(service) -> list[ListenerService]:
    """Every L{ListenerService} in the tree under C{service}."""
    found = []
    if isinstance(service, ListenerService):
        found.append(service)
    if IServiceCollection.providedBy(service):
        for child in service:
            found.extend(listeners_of(child))
    return found


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between two C{WATCHDOG=1}: half what systemd allows; C{None} without a watchdog."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (the one that started us)
    return int(usec) / 2e6


class SystemdNotifier(Service):
    """
    Tells systemd about the role in C{top}: add it to the top service last,
    so that it starts after the role and is the first told to stop.
    """

    def __init__(self, reactor, top, environ: Mapping[str, str] = os.environ) -> None:
        self._reactor = reactor
        self._top = top
        self._environ = environ
        self._watchdog: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        if not self._environ.get("NOTIFY_SOCKET"):
            return
        listeners = listeners_of(self._top)
        listening = gatherResults([listener.when_listening() for listener in listeners], consumeErrors=True)
        listening.addCallbacks(self._ready, lambda _: None, (listeners,))  # a failure ends the program
        interval = watchdog_interval(self._environ)
        if interval is not None:
            self._watchdog = LoopingCall(notify, "WATCHDOG=1", self._environ)
            self._watchdog.clock = self._reactor
            self._watchdog.start(interval, now=True)

    def _ready(self, _, listeners: list[ListenerService]) -> None:
        if not self.running:
            return
        where = ", ".join(listener.description for listener in listeners) or "nothing"
        notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=Listening on {where}", self._environ)

    def stopService(self) -> None:
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        if self._environ.get("NOTIFY_SOCKET"):
            notify("STOPPING=1", self._environ)
