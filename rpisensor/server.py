"""
The sensor server role: answers C{go} (and a few more commands) with the state
of the inputs, to any number of clients at once.
"""

from __future__ import annotations

from collections import deque

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor import wire
from rpisensor.access import AccessPolicy
from rpisensor.guard import DrainService, GuardedFactory, ServerConnection, ServerLimits, StopInOrder
from rpisensor.listening import ListenerService
from rpisensor.reader import InputReader, Reading, UnknownInput

HELP_TEXT = "commands: go | read NAME | list | ping | help"


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
    """

    _log = Logger()

    def connectionMade(self) -> None:
        super().connectionMade()
        self._replies: deque[list[str | None]] = deque()
        self._paused_for: set[str] = set()
        self.transport.registerProducer(self, True)

    @property
    def busy(self) -> bool:
        return bool(self._replies)

    def messageReceived(self, text: str) -> None:
        verb, args = wire.parse_command(text)
        if not verb:
            return
        handler = getattr(self, f"command_{verb}", None)
        if handler is None:
            self._log.debug("Unknown command {verb!r} from {peer}", verb=verb, peer=self.peer)
            reply = f"error: unknown command {verb!r}; send 'help' for the list"
        else:
            reply = handler(args)
        self._queue_reply(reply)

    def invalidMessageReceived(self, body: bytes, error: wire.MessageError) -> None:
        super().invalidMessageReceived(body, error)
        self._queue_reply(f"error: {error}")

    def _queue_reply(self, reply: str | Deferred) -> None:
        # A one-item list per command, filled with the reply text when it is
        # ready; replies leave strictly in command order.
        slot: list[str | None] = [None]
        self._replies.append(slot)
        if isinstance(reply, str):
            slot[0] = reply
        else:
            reply.addCallbacks(_reading_text, self._error_text)
            reply.addCallback(self._reply_ready, slot)
        self._send_ready_replies()
        if len(self._replies) >= self.factory.limits.max_pending:
            self._pause("pending")

    def _reply_ready(self, text: str, slot: list[str | None]) -> None:
        slot[0] = text
        self._send_ready_replies()

    def _send_ready_replies(self) -> None:
        replies = self._replies
        while replies and replies[0][0] is not None:
            text = replies.popleft()[0]
            if not self.transport.disconnecting:
                self.sendMessage(text)
        if len(replies) < self.factory.limits.max_pending:
            self._resume("pending")
        if not replies:
            self.workDone()

    def _error_text(self, failure: Failure) -> str:
        self._log.warn("Reading failed for {peer}: {error}", peer=self.peer, error=str(failure.value))
        return f"error: reading failed: {failure.value}"

    # Flow control. As a producer of replies, the transport pauses us when its
    # buffer is full; we then stop reading commands.

    def pauseProducing(self) -> None:
        self._pause("writes")

    def resumeProducing(self) -> None:
        self._resume("writes")

    def stopProducing(self) -> None:
        pass

    def _pause(self, reason: str) -> None:
        if not self._paused_for:
            self.transport.pauseProducing()
            self.pauseMessages()
        self._paused_for.add(reason)

    def _resume(self, reason: str) -> None:
        if reason in self._paused_for:
            self._paused_for.discard(reason)
            if not self._paused_for and not self.closing:
                self.transport.resumeProducing()
                self.resumeMessages()

    # Commands: each takes the message's arguments and returns the reply text,
    # or a Deferred that fires with a Reading.

    def command_go(self, args: list[str]) -> str | Deferred[Reading]:
        if args:
            return "error: go takes no arguments"
        return self.factory.reader.read(self.factory.reader.first.name)

    def command_read(self, args: list[str]) -> str | Deferred[Reading]:
        if len(args) != 1:
            return "error: usage: read NAME (send 'list' for the names)"
        try:
            return self.factory.reader.read(args[0])
        except UnknownInput as e:
            return f"error: {e}"

    def command_list(self, args: list[str]) -> str:
        return " ".join(self.factory.reader.inputs)

    def command_ping(self, args: list[str]) -> str:
        return "pong"

    def command_help(self, args: list[str]) -> str:
        return HELP_TEXT


def _reading_text(reading: Reading) -> str:
    return reading.text


class SensorServerFactory(GuardedFactory):
    """
    Builds L{SensorServerProtocol}s answering from C{reader}.

    @param limits: message size, connections, idle time, pending commands.
    @param policy: who may connect; by default loopback and private networks.
    """

    protocol = SensorServerProtocol

    def __init__(
        self,
        reader: InputReader,
        limits: ServerLimits = ServerLimits(),
        policy: AccessPolicy | None = None,
    ) -> None:
        super().__init__(limits, policy, reader.clock)
        self.reader = reader


def build_server_service(
    reactor,
    reader: InputReader,
    reader_service: Service,
    listen: list[str],
    limits: ServerLimits = ServerLimits(),
    policy: AccessPolicy | None = None,
    client_ca: bytes | None = None,
) -> StopInOrder:
    """
    The whole server: the reader's pool and channels, and one listener per
    endpoint description in C{listen}. It stops in order: the listeners, then
    the replies in flight, then the pool and the channels.

    @param client_ca: PEM of a CA; C{ssl:} listeners then require client
        certificates signed by it.
    """
    top = StopInOrder()
    reader_service.setServiceParent(top)
    factory = SensorServerFactory(reader, limits, policy)
    DrainService(factory, reactor, reader.read_timeout + 1).setServiceParent(top)
    for description in listen:
        ListenerService(reactor, description, factory, client_ca).setServiceParent(top)
    top.factory = factory
    return top
