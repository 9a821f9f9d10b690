"""
The sensor server role: answers C{go} (and a few more commands) with the state
of the inputs, to any number of clients at once.
"""

from __future__ import annotations

from collections import deque
from functools import partial

from twisted.application.service import Service
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor import wire
from rpisensor.access import AccessPolicy
from rpisensor.guard import DrainService, GuardedFactory, ServerConnection, StopInOrder
from rpisensor.limits import ServerLimits
from rpisensor.listening import ListenerService
from rpisensor.reader import InputReader, Reading, UnknownInput

HELP_TEXT = "commands: go | read NAME | list | ping | help"

# Reasons to stop reading from a client, as bits.
_WRITES = 1  # its replies fill the socket buffer: it does not read them
_PENDING = 2  # max_pending commands wait for their replies


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

    # One slot per command waiting for its reply, in arrival order: a one-item
    # list holding the reply's wire bytes once known; created on first need,
    # as most connections never have one waiting (memory per idle client).
    _replies: deque[list[bytes | None]] | None = None
    # Why reading is paused: a bit per reason.
    _paused_for = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.registerProducer(self, True)

    @property
    def busy(self) -> bool:
        return bool(self._replies)

    def messageReceived(self, text: str) -> None:
        if text == "go":  # the tutorial's command, as it sends it: the hot path
            self._reply_with_reading(self.factory.reader.first.name)
            return
        verb, args = wire.parse_command(text)
        if not verb:
            return
        handler = getattr(self, f"command_{verb}", None)
        if handler is None:
            self._log.debug("Unknown command {verb!r} from {peer}", verb=verb, peer=self.peer)
            self._reply(f"error: unknown command {verb!r}; send 'help' for the list")
        else:
            handler(args)

    def invalidMessageReceived(self, body: bytes, error: wire.MessageError) -> None:
        super().invalidMessageReceived(body, error)
        self._reply(f"error: {error}")

    def _reply(self, text: str) -> None:
        """Send a reply that is known now, or queue it behind replies still pending."""
        if self._replies:
            self._replies.append([wire.frame(text)])
            self._send_ready_replies()
            if len(self._replies) >= self.factory.limits.max_pending:
                self._pause(_PENDING)
        elif not self.transport.disconnecting:
            self.transport.write(wire.frame(text))

    def _reply_with_reading(self, name: str) -> None:
        """Queue a reply that is input C{name}'s reading, once it is read."""
        slot: list[bytes | None] = [None]
        if self._replies is None:
            self._replies = deque()
        self._replies.append(slot)
        self.factory.reader.when_read(name, partial(self._reading_ready, slot))
        if slot[0] is None and len(self._replies) >= self.factory.limits.max_pending:
            self._pause(_PENDING)

    def _reading_ready(self, slot: list[bytes | None], outcome: Reading | Failure) -> None:
        if isinstance(outcome, Failure):
            self._log.warn(
                "Reading failed for {peer}: {error}", peer=self.peer, error=outcome.getErrorMessage()
            )
            slot[0] = wire.frame(f"error: reading failed: {outcome.getErrorMessage()}")
        else:
            slot[0] = outcome.frame
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
            self._resume(_PENDING)
        if not replies:
            self.workDone()

    # Flow control. As a producer of replies, the transport pauses us when its
    # buffer is full; we then stop reading commands.

    def pauseProducing(self) -> None:
        self._pause(_WRITES)

    def resumeProducing(self) -> None:
        self._resume(_WRITES)

    def stopProducing(self) -> None:
        pass

    def _pause(self, reason: int) -> None:
        if not self._paused_for:
            self.transport.pauseProducing()
            self.pauseMessages()
        self._paused_for |= reason

    def _resume(self, reason: int) -> None:
        if self._paused_for & reason:
            self._paused_for &= ~reason
            if self._paused_for or self.gone:
                return  # a client that left gets no more work done for it
            if not self.closing:
                self.transport.resumeProducing()
            self.resumeMessages()

    # Commands: each takes the message's arguments and queues its reply.

    def command_go(self, args: list[str]) -> None:
        if args:
            self._reply("error: go takes no arguments")
        else:
            self._reply_with_reading(self.factory.reader.first.name)

    def command_read(self, args: list[str]) -> None:
        if len(args) != 1:
            self._reply("error: usage: read NAME (send 'list' for the names)")
        elif args[0] not in self.factory.reader.inputs:
            self._reply(f"error: {UnknownInput(args[0], self.factory.reader.inputs)}")
        else:
            self._reply_with_reading(args[0])

    def command_list(self, args: list[str]) -> None:
        self._reply(" ".join(self.factory.reader.inputs))

    def command_ping(self, args: list[str]) -> None:
        self._reply("pong")

    def command_help(self, args: list[str]) -> None:
        self._reply(HELP_TEXT)


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
