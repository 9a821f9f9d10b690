"""
One client of C{serve}: each command gets exactly one reply, in order.
"""

from __future__ import annotations

from collections import deque
from functools import partial

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor import wire
from rpisensor.net.connection import Pause, ServerConnection
from rpisensor.sensing.reading import Reading


@implementer(IPushProducer)
class SensorServerProtocol(ServerConnection):
    """
    One client connection. Each command gets exactly one reply message, in
    the order the commands arrived, even when a later command (C{ping}) is
    ready before an earlier one (a slow C{go}). Empty messages are ignored.

    Reading from the client pauses while its unsent replies fill the socket
    buffer (a client that never reads) or while C{max_pending} commands wait
    for their replies, so one client cannot make the server buffer without
    bound.

    @ivar granted: the permissions of this client (see L{Permission}).
    """

    _log = Logger()

    # One slot per command waiting for its reply, in arrival order: a one-item
    # list holding the reply's wire bytes once known; created on first need,
    # as most connections never have one waiting (memory per idle client).
    _replies: deque[list[bytes | None]] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.granted = self.factory.permissions_for(self.transport)
        self.transport.registerProducer(self, True)

    @property
    def busy(self) -> bool:
        return bool(self._replies)

    def messageReceived(self, text: str) -> None:
        if text == "go":  # the tutorial's command, as it sends it: the hot path
            self.reply_with_reading(self.factory.reader.first.name)
            return
        verb, args = wire.parse_command(text)
        if not verb:
            return
        command = self.factory.commands.get(verb)
        if command is None:
            self._log.debug("Unknown command {verb!r} from {peer}", verb=verb, peer=self.peer)
            self.reply(f"error: unknown command {verb!r}; send 'help' for the list")
        elif command.permission not in self.granted:
            self.reply(command.refusal or f"error: {verb} is not allowed for this client")
        elif not command.arguments[0] <= len(args) <= command.arguments[1]:
            self.reply(command.usage_error())
        else:
            command.handler(self, args)

    def invalidMessageReceived(self, body: bytes, error: wire.MessageError) -> None:
        super().invalidMessageReceived(body, error)
        self.reply(f"error: {error}")

    def reply(self, text: str) -> None:
        """Send a reply that is known now, or queue it behind replies still pending."""
        if self._replies:
            self._replies.append([wire.frame(text)])
            self._send_ready_replies()
            if len(self._replies) >= self.factory.limits.max_pending:
                self.pause(Pause.PENDING)
        elif not self.transport.disconnecting:
            self.transport.write(wire.frame(text))

    def reply_with_reading(self, name: str) -> None:
        """Queue a reply that is input C{name}'s reading, once it is read."""
        slot: list[bytes | None] = [None]
        if self._replies is None:
            self._replies = deque()
        self._replies.append(slot)
        self.factory.reader.when_read(name, partial(self._reading_ready, slot))
        if slot[0] is None and len(self._replies) >= self.factory.limits.max_pending:
            self.pause(Pause.PENDING)

    def _reading_ready(self, slot: list[bytes | None], outcome: Reading | Failure) -> None:
        if isinstance(outcome, Failure):
            # The reader logs a failing or hung sensor once; the client is told in its reply.
            slot[0] = wire.frame(f"error: reading failed: {outcome.getErrorMessage()}")
        else:
            slot[0] = self.factory.frame_for(outcome)
        self._send_ready_replies()

    def _send_ready_replies(self) -> None:
        replies = self._replies
        if not replies or replies[0][0] is None:
            return
        ready = []
        while replies and replies[0][0] is not None:
            ready.append(replies.popleft()[0])
        if not self.transport.disconnecting:
            self.transport.writeSequence(ready)
        if len(replies) < self.factory.limits.max_pending:
            self.resume(Pause.PENDING)
        if not replies:
            self.workDone()

    # As a producer of replies, the transport pauses us when its buffer is
    # full; we then stop reading commands.

    def pauseProducing(self) -> None:
        self.pause(Pause.WRITES)

    def resumeProducing(self) -> None:
        self.resume(Pause.WRITES)

    def stopProducing(self) -> None:
        pass
