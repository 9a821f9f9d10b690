"""
The one framing base class for every role: NUL-terminated UTF-8 messages.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from rpisensor import wire


class NullTerminatedProtocol(LineOnlyReceiver):
    """
    Messages are UTF-8 text ended by one NUL byte (C{delimiter = b"\\0"}).

    Subclasses override L{messageReceived} and call L{sendMessage}. Framing is
    Twisted's L{LineOnlyReceiver}: a message may arrive split across any number
    of TCP segments, or many messages in one.

    C{MAX_LENGTH} bounds one message body in bytes (default
    L{wire.DEFAULT_MAX_MESSAGE_BYTES}); a factory may set C{maxMessageBytes} to
    change it per listener. A longer message goes to L{messageTooLong}; a body
    that is not UTF-8 goes to L{invalidMessageReceived}. Neither raises.
    """

    delimiter = wire.DELIMITER
    MAX_LENGTH = wire.DEFAULT_MAX_MESSAGE_BYTES
    _log = Logger()

    def makeConnection(self, transport):
        limit = getattr(self.factory, "maxMessageBytes", None)
        if limit is not None:
            self.MAX_LENGTH = limit
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        """
        Split C{data} into messages. Most traffic is ASCII (C{go}, the replies):
        then the whole chunk is decoded once, instead of once per message,
        which is faster than the base class. Anything else takes the base
        class's path, one message at a time.
        """
        buffer = self._buffer + data if self._buffer else data
        if not buffer.isascii():
            self._buffer = b""
            return super().dataReceived(buffer)
        messages = buffer.decode("ascii").split("\0")
        rest = messages.pop()
        self._buffer = rest.encode("ascii")
        limit = self.MAX_LENGTH
        transport = self.transport
        received = self.messageReceived
        for text in messages:
            if transport.disconnecting:
                return
            if len(text) > limit:
                return self.messageTooLong(len(text))
            received(text)
        if len(rest) > limit:
            self.messageTooLong(len(rest))

    def lineReceived(self, line: bytes) -> None:
        try:
            text = wire.decode(line)
        except wire.MessageError as error:
            self.invalidMessageReceived(line, error)
            return
        self.messageReceived(text)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.messageTooLong(len(line))

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

    def messageReceived(self, text: str) -> None:
        """Override: one whole message has arrived, as text without its NUL."""
        raise NotImplementedError

    def invalidMessageReceived(self, body: bytes, error: wire.MessageError) -> None:
        """
        Override: a whole message arrived that is not UTF-8. The framing is intact,
        so by default the message is logged, dropped and the connection kept.
        """
        self._log.warn(
            "Dropped a message from {peer}: {error}. Send UTF-8 text ended by one NUL byte.",
            peer=peer_text(self.transport),
            error=str(error),
        )

    def messageTooLong(self, length: int) -> None:
        """
        Override: a message grew past C{MAX_LENGTH} bytes without its NUL. The
        stream cannot be trusted after that, so by default the connection is
        closed, after the messages before it were delivered.
        """
        self._log.warn(
            "Closing the connection from {peer}: a message reached {length} bytes, "
            "over the limit of {limit}; raise the limit if such messages are expected.",
            peer=peer_text(self.transport),
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.transport.loseConnection()


def peer_text(transport) -> str:
    """A short, human form of a transport's peer address for log lines."""
    try:
        peer = transport.getPeer()
    except Exception:
        return "an unknown peer"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(peer, "name", None)
    if not name:  # a Unix socket's client has no name: say which socket it came in on
        name = getattr(transport.getHost(), "name", None)
        if not name:
            return "a local client"
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return f"local socket {name}"

