"""
The one framing base class for every role: NUL-terminated UTF-8 messages.
"""

from __future__ import annotations

from collections import deque

from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from rpisensor import wire
from rpisensor.lograte import RateLimitedLog
from rpisensor.net.peers import peer_text


class NullTerminatedProtocol(LineOnlyReceiver):
    """
    Messages are UTF-8 text ended by one NUL byte (C{delimiter = b"\\0"}).

    Subclasses override L{messageReceived} and call L{sendMessage}. A message
    may arrive split across any number of TCP segments, or many messages in
    one.

    C{MAX_LENGTH} bounds one message body in bytes (default
    L{wire.DEFAULT_MAX_MESSAGE_BYTES}); a factory may set C{maxMessageBytes} to
    change it per listener. A longer message goes to L{messageTooLong}; a body
    that is not UTF-8 goes to L{invalidMessageReceived}. Neither raises.

    Lines the peer can trigger go through L{peer_log}: the factory's
    C{peer_log} when it has one (shared by all its connections, so a flood
    of connections is bounded too), else one of this connection's own.

    L{pauseMessages} stops the delivery of messages already received (the
    rest of a segment stays buffered) until L{resumeMessages}: with the
    transport paused too, that bounds what one peer can make us hold.
    """

    delimiter = wire.DELIMITER
    MAX_LENGTH = wire.DEFAULT_MAX_MESSAGE_BYTES
    _log = Logger()
    _held = False
    #: Whole messages received and not yet delivered (held back), oldest first:
    #: text when their segment was ASCII, else bytes; C{None} when there are none.
    _held_messages: deque[str | bytes] | None = None
    #: Where the lines a peer can trigger go (see the class docstring).
    peer_log: RateLimitedLog

    def makeConnection(self, transport):
        limit = getattr(self.factory, "maxMessageBytes", None)
        if limit is not None:
            self.MAX_LENGTH = limit
        self.peer_log = self._peer_log_for(self.factory)
        super().makeConnection(transport)

    def _peer_log_for(self, factory) -> RateLimitedLog:
        """The factory's C{peer_log} (one for all its connections), or one of this connection's own."""
        shared = getattr(factory, "peer_log", None)
        return shared if shared is not None else _own_log(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Split the buffered bytes into messages and deliver them, in order.

        Twisted's C{LineOnlyReceiver} splits the same way but cannot pause and
        hands up bytes. Most traffic is ASCII (C{go}, the replies): then the
        whole segment is decoded once, rather than once per message, which
        makes this faster per message than decoding behind the base class.

        Messages held back (L{pauseMessages}) stay split, in L{_held_messages}: a
        burst of many messages paused after every few is split once, not
        once per resumption.
        """
        if self.transport.disconnecting:
            return  # closing (a message was too long): what follows is not read
        if data:
            self._buffer = self._buffer + data if self._buffer else data
        if self._held:
            return
        if self._held_messages is not None:
            if not self._deliver_held():
                return
        buffer = self._buffer
        if not buffer:
            return
        ascii = buffer.isascii()
        parts = buffer.decode("ascii").split("\0") if ascii else buffer.split(b"\0")
        rest = parts.pop()
        self._buffer = b""
        deliver = self.messageReceived if ascii else self.lineReceived
        limit = self.MAX_LENGTH
        transport = self.transport
        remaining = iter(parts)
        for part in remaining:
            if transport.disconnecting:
                return
            if len(part) > limit:
                return self.messageTooLong(len(part))
            deliver(part)
            if self._held:
                self._held_messages = deque(remaining)
                self._buffer = (rest.encode("ascii") if ascii else rest) + self._buffer
                return
        self._buffer = (rest.encode("ascii") if ascii else rest) + self._buffer
        if len(self._buffer) > limit:
            self.messageTooLong(len(self._buffer))

    def _deliver_held(self) -> bool:
        """Deliver the held messages, oldest first; C{False} if held again before the last."""
        waiting = self._held_messages
        limit = self.MAX_LENGTH
        transport = self.transport
        while waiting:
            if transport.disconnecting:
                return False
            part = waiting.popleft()
            if len(part) > limit:
                self._held_messages = None
                self.messageTooLong(len(part))
                return False
            if isinstance(part, str):
                self.messageReceived(part)
            else:
                self.lineReceived(part)
            if self._held:
                return False
        self._held_messages = None
        return True

    @property
    def holds_messages(self) -> bool:
        """Whether messages already received wait for L{resumeMessages}."""
        return self._held and bool(self._buffer or self._held_messages)

    def pauseMessages(self) -> None:
        """Deliver no more messages until L{resumeMessages}; keep them buffered."""
        self._held = True

    def resumeMessages(self) -> None:
        """Deliver the buffered messages, and new ones as they come."""
        if self._held:
            self._held = False
            if (self._buffer or self._held_messages) and not self.transport.disconnecting:
                self.dataReceived(b"")

    def connectionLost(self, reason) -> None:
        """Drop what was held or half received: nothing more is delivered for a peer that left."""
        self._buffer = b""
        self._held_messages = None
        self._held = False
        super().connectionLost(reason)

    def lineReceived(self, line: bytes) -> None:
        try:
            text = wire.decode(line)
        except wire.MessageError as error:
            self.invalidMessageReceived(line, error)
            return
        self.messageReceived(text)

    def sendLine(self, line: bytes) -> None:
        """
        Send one message body; refuse one containing NUL, which the base class
        would write unchanged and so corrupt the framing.
        """
        if wire.DELIMITER in line:
            raise wire.MessageError("message body contains a NUL byte")
        self.transport.writeSequence((line, wire.DELIMITER))

    def sendMessage(self, text: str) -> None:
        """
        Send C{text} as one message.

        @raise wire.MessageError: C{text} contains a NUL.
        """
        self.transport.writeSequence((wire.encode(text), wire.DELIMITER))

    def sendMessages(self, texts: list[str]) -> None:
        """
        Send each of C{texts} as one message, in order, in one write.

        @raise wire.MessageError: one contains a NUL (then none is sent).
        """
        self.transport.write(b"".join([wire.frame(text) for text in texts]))

    def messageReceived(self, text: str) -> None:
        """Override: one whole message has arrived, as text without its NUL."""
        raise NotImplementedError

    def invalidMessageReceived(self, body: bytes, error: wire.MessageError) -> None:
        """
        Override: a whole message arrived that is not UTF-8. The framing is intact,
        so by default the message is logged, dropped and the connection kept.
        """
        self.peer_log.warn(
            "Dropped a message from {peer}: {error}. Send UTF-8 text ended by one NUL byte.",
            key="messages that are not UTF-8",
            peer=peer_text(self.transport),
            error=str(error),
        )

    def messageTooLong(self, length: int) -> None:
        """
        Override: a message grew past C{MAX_LENGTH} bytes without its NUL. The
        stream cannot be trusted after that, so by default the connection is
        closed, after the messages before it were delivered.
        """
        self.logTooLong(length)
        self.transport.loseConnection()

    def logTooLong(self, length: int) -> None:
        self.peer_log.warn(
            "Closing the connection from {peer}: a message reached {length} bytes, "
            "over the limit of {limit}; raise the limit if such messages are expected.",
            key="messages over the length limit",
            peer=peer_text(self.transport),
            length=length,
            limit=self.MAX_LENGTH,
        )


def _own_log(protocol: NullTerminatedProtocol) -> RateLimitedLog:
    """A rate-limited log for one connection whose factory has none (a client's)."""
    clock = getattr(protocol.factory, "clock", None)
    if clock is None:
        from twisted.internet import reactor as clock
    return RateLimitedLog(clock, protocol._log)
