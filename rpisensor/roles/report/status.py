"""
What C{rpisensor query ENDPOINT status} tells about a running reporter: a
small listener (C{--status-listen}) that answers C{status}, C{ping} and
C{help} with one line each, and refuses everything else.

    $ rpisensor query unix:path=rpisensor-report.sock status
    stream=8f3a1c2e9b7d4a60 device=pi-kitchen-3f2a9c connected=yes protocol=2 outbox=12
    oldest_unacked=405 (2026-12-01T19:33:25.123Z) last_ack=404 (2.1 s ago) gaps=1-7:outbox full

(one line). C{serve}'s command classes answer from a sensor reader, so this
is a protocol of its own on the servers' common base, L{ServerConnection}.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections import deque
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor import wire
from rpisensor.net.admission import AdmittingFactory
from rpisensor.net.connection import Pause, ServerConnection
from rpisensor.net.limits import ServerLimits
from rpisensor.net.listening import CannotListen, ListenerService
from rpisensor.net.tls import endpoint_type, parse_description
from rpisensor.entries import Gap

if TYPE_CHECKING:
    from rpisensor.roles.report.reporter import Reporter

HELP = "commands: status | ping | help"
#: The most gaps one status line lists; more are counted.
MAX_GAPS_SHOWN = 5


async def status_line(reporter: Reporter) -> str:
    """The reporter's state in one line of C{key=value} pairs (see the module docstring)."""
    connected, protocol = reporter.way_out()
    outbox = reporter.outbox
    device = reporter.stream.device if reporter.stream is not None else "none"
    head = [
        f"stream={outbox.journal.stream if outbox is not None else 'none'}",
        f"device={device}",
        f"connected={'yes' if connected else 'no'}",
        f"protocol={protocol}",
    ]
    if outbox is None:
        return " ".join([*head, "outbox=none"])
    journal = outbox.journal
    # After a restart the outbox knows only that what it trimmed was acknowledged.
    acked = max(outbox.acked, journal.first - 1 if journal.first else journal.last)
    waiting = max(0, journal.last - acked)
    parts = [*head, f"outbox={waiting}"]
    if waiting:
        [oldest] = await outbox.after(acked, 1)
        when = "a gap" if isinstance(oldest, Gap) else oldest.ts
        parts.append(f"oldest_unacked={acked + 1} ({when})")
    else:
        parts.append("oldest_unacked=none")
    if reporter.last_ack is None:
        parts.append("last_ack=none")
    else:
        seq, at = reporter.last_ack
        parts.append(f"last_ack={seq} ({reporter.clock.seconds() - at:.1f} s ago)")
    parts.append(f"gaps={_gaps(await outbox.gaps())}")
    return " ".join(parts)


def _gaps(gaps: list[Gap]) -> str:
    if not gaps:
        return "none"
    shown = " | ".join(f"{g.first}-{g.last}:{g.reason}" for g in gaps[:MAX_GAPS_SHOWN])
    more = len(gaps) - MAX_GAPS_SHOWN
    return shown + (f" | and {more} more" if more > 0 else "")


class StatusProtocol(ServerConnection):
    """
    One client of the status listener: each command gets exactly one reply
    line, in order (C{status} is answered once the outbox has been read).
    """

    _log = Logger(namespace="rpisensor.report.status")
    peer_role = "Status client"
    _replies: deque | None = None

    @property
    def busy(self) -> bool:
        return bool(self._replies)

    def messageReceived(self, text: str) -> None:
        verb, args = wire.parse_command(text)
        if not verb:
            return
        if verb not in ("status", "ping", "help"):
            self.reply(
                f"error: unknown command {verb[:32]!r}; this is a reporter's status listener, it "
                "answers: status, ping, help"
            )
        elif args:
            self.reply(f"error: {verb} takes no arguments")
        elif verb == "ping":
            self.reply("pong")
        elif verb == "help":
            self.reply(HELP)
        else:
            self._reply_later(Deferred.fromCoroutine(status_line(self.factory.reporter)))

    def invalidMessageReceived(self, body: bytes, error: wire.MessageError) -> None:
        super().invalidMessageReceived(body, error)
        self.reply(f"error: {error}")

    def reply(self, text: str) -> None:
        slot = [wire.frame(text)]
        if self._replies:  # behind a status still being read
            self._replies.append(slot)
            if len(self._replies) >= self.factory.limits.max_pending:
                self.pause(Pause.PENDING)
        elif not self.transport.disconnecting:
            self.transport.write(slot[0])

    def _reply_later(self, answer: Deferred) -> None:
        slot: list[bytes | None] = [None]
        if self._replies is None:
            self._replies = deque()
        self._replies.append(slot)
        if len(self._replies) >= self.factory.limits.max_pending:
            self.pause(Pause.PENDING)
        answer.addCallbacks(wire.frame, self._failed)
        answer.addCallback(self._ready, slot)

    def _failed(self, failure: Failure) -> bytes:
        self._log.failure("The status could not be read", failure)
        return wire.frame(f"error: the status could not be read ({failure.getErrorMessage()})")

    def _ready(self, frame: bytes, slot: list) -> None:
        slot[0] = frame
        replies = self._replies
        ready = []
        while replies and replies[0][0] is not None:
            ready.append(replies.popleft()[0])
        if ready and not self.transport.disconnecting:
            self.transport.writeSequence(ready)
        if len(replies) < self.factory.limits.max_pending:
            self.resume(Pause.PENDING)
        if not replies:
            self.workDone()


class StatusFactory(AdmittingFactory):
    """Status clients of one reporter; the servers' limits and access policy (local networks)."""

    protocol = StatusProtocol

    def __init__(self, reporter: Reporter, limits: ServerLimits = ServerLimits(max_connections=20)) -> None:
        super().__init__(limits, None, reporter.clock)
        self.reporter = reporter

    def logPrefix(self) -> str:
        return "rpisensor report status"


class StatusListenerService(ListenerService):
    """
    Listens for status clients. A C{unix:} socket file left behind by a
    reporter that was killed is removed first; one that still answers means
    another reporter runs with the same socket, which stops the start-up
    with one line.
    """

    def privilegedStartService(self) -> None:
        if endpoint_type(self.description) == "unix":
            self._remove_stale_socket()
        super().privilegedStartService()

    def _remove_stale_socket(self) -> None:
        args, kwargs = parse_description(self.description)
        path = kwargs.get("address") or (args[1] if len(args) > 1 else None)
        if not path:
            return
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                return  # not ours to remove: listening says what is wrong
        except OSError:
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
                # Nobody listens: what a killed process leaves. (A pid lock file,
                # Twisted's way, can name another program's pid after a reboot.)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            return
        finally:
            probe.close()
        raise CannotListen(
            f"cannot listen on {path}: another reporter answers there",
            f"rpisensor: cannot listen on {self.description}: another reporter answers there "
            "(give each reporter its own --status-listen or state directory)",
        )


def status_service(reactor, description: str, reporter: Reporter) -> StatusListenerService:
    """The status listener on C{description} for C{reporter}."""
    return StatusListenerService(reactor, description, StatusFactory(reporter), option="--status-listen")
