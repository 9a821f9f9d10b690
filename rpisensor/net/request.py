"""
The client side of the protocol: send a command, get its reply.

Replies come back in the order the commands were sent (the server
guarantees it), so each reply completes the oldest outstanding request.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.net.peers import peer_text


class ClientConnection(NullTerminatedProtocol):
    """Base of the client roles' protocols: logs disconnects in the tutorial's words."""

    _log = Logger()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._log.info(
            "Disconnected from {where}: {reason}",
            where=peer_text(self.transport),
            reason=reason.getErrorMessage(),
        )


class RequestProtocol(ClientConnection):
    """
    C{request(text)} sends a message and returns a Deferred for the next reply.

    Messages arriving with no request outstanding go to L{unsolicitedMessage}.
    When the connection ends, outstanding requests fail with its reason.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._waiting: deque[Deferred[str]] = deque()
        #: Fires when the connection has ended.
        self.lost: Deferred[None] = Deferred()

    @property
    def outstanding(self) -> int:
        """How many requests still wait for their reply."""
        return len(self._waiting)

    def request(self, text: str) -> Deferred[str]:
        """
        Send C{text}; the result fires with the reply text.

        @raise rpisensor.wire.MessageError: C{text} contains a NUL.
        """
        self.sendMessage(text)
        d: Deferred[str] = Deferred()
        self._waiting.append(d)
        return d

    def messageReceived(self, text: str) -> None:
        if self._waiting:
            self._waiting.popleft().callback(text)
        else:
            self.unsolicitedMessage(text)

    def unsolicitedMessage(self, text: str) -> None:
        """Override: a message that answers no request. By default, logged."""
        self._log.info(
            "Message from {peer} that answers no request: {text!r}",
            peer=peer_text(self.transport),
            text=text,
        )

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(reason)
        super().connectionLost(reason)
        self.lost.callback(None)
