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

from rpisensor.protocol import NullTerminatedProtocol, peer_text


class UnexpectedMessage(Exception):
    """A message arrived while no request was waiting for one."""


class RequestProtocol(NullTerminatedProtocol):
    """
    C{request(text)} sends a message and returns a Deferred for the next reply.

    Messages arriving with no request outstanding go to L{unsolicitedMessage}.
    When the connection ends, outstanding requests fail with its reason.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._waiting: deque[Deferred[str]] = deque()
        self.connected_deferred: Deferred[RequestProtocol] = Deferred()
        self.lost: Deferred[None] = Deferred()

    @property
    def outstanding(self) -> int:
        """How many requests still wait for their reply."""
        return len(self._waiting)

    def connectionMade(self) -> None:
        self.connected_deferred.callback(self)

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
        self.lost.callback(None)
