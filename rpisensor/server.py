"""
The sensor server role: answers C{go} (and a few more commands) with the state
of the inputs, to any number of clients at once.
"""

from __future__ import annotations

from collections import deque

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor import wire
from rpisensor.listening import ListenerService
from rpisensor.protocol import NullTerminatedProtocol, peer_text
from rpisensor.reader import InputReader, Reading, UnknownInput

HELP_TEXT = "commands: go | read NAME | list | ping | help"


class SensorServerProtocol(NullTerminatedProtocol):
    """
    One client connection. Each command gets exactly one reply message, in
    the order the commands arrived, even when a later command (C{ping}) is
    ready before an earlier one (a slow C{go}). Empty messages are ignored.
    """

    _log = Logger()

    def connectionMade(self) -> None:
        self._replies: deque[list] = deque()
        self.peer = peer_text(self.transport)
        self.factory.connections.add(self)
        self._log.info("Client connected from {peer}", peer=self.peer)

    def connectionLost(self, reason: Failure) -> None:
        self.factory.connections.discard(self)
        self._log.info("Client {peer} disconnected", peer=self.peer)

    def messageReceived(self, text: str) -> None:
        verb, args = wire.parse_command(text)
        if not verb:
            return
        handler = getattr(self, f"command_{verb}", None)
        if handler is None:
            self._log.info("Unknown command {verb!r} from {peer}", verb=verb, peer=self.peer)
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

    def _reply_ready(self, text: str, slot: list[str | None]) -> None:
        slot[0] = text
        self._send_ready_replies()

    def _send_ready_replies(self) -> None:
        while self._replies and self._replies[0][0] is not None:
            text = self._replies.popleft()[0]
            if not self.transport.disconnecting:
                self.sendMessage(text)

    def _error_text(self, failure: Failure) -> str:
        self._log.warn(
            "Reading failed for {peer}: {error}", peer=self.peer, error=str(failure.value)
        )
        return f"error: reading failed: {failure.value}"

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


class SensorServerFactory(Factory):
    """
    Builds L{SensorServerProtocol}s answering from C{reader}.

    @param max_message_bytes: largest command accepted, in bytes.
    """

    protocol = SensorServerProtocol
    noisy = False

    def __init__(
        self, reader: InputReader, max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.reader = reader
        self.maxMessageBytes = max_message_bytes
        self.connections: set[SensorServerProtocol] = set()


def build_server_service(
    reactor,
    reader: InputReader,
    reader_service: Service,
    listen: list[str],
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
) -> MultiService:
    """
    The whole server: the reader's pool and channels, and one listener per
    endpoint description in C{listen}, all started and stopped together.
    """
    top = MultiService()
    reader_service.setServiceParent(top)
    factory = SensorServerFactory(reader, max_message_bytes)
    for description in listen:
        ListenerService(reactor, description, factory).setServiceParent(top)
    top.factory = factory
    return top
