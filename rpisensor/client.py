"""
The client side of the protocol: send a command, get its reply.

Replies come back in the order the commands were sent (the server
guarantees it), so each reply completes the oldest outstanding request.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.protocol import NullTerminatedProtocol, peer_text


class StoryProtocol(NullTerminatedProtocol):
    """Base of the client roles' protocols: logs disconnects in the tutorial's words."""

    _log = Logger()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._log.info(
            "Disconnected from {where}: {reason}",
            where=peer_text(self.transport),
            reason=reason.getErrorMessage(),
        )


class RequestProtocol(StoryProtocol):
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
        super().connectionLost(reason)
        self.lost.callback(None)


@implementer(IStreamClientEndpoint)
class StoryEndpoint:
    """
    Wraps a client endpoint to tell the connection story in the log in the
    tcpcom tutorial's words: connecting, connected, connection failed.
    """

    _log = Logger(namespace="rpisensor.client")

    def __init__(self, endpoint: IStreamClientEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self.description = description

    def connect(self, factory):
        self._log.info("Connecting to {where}...", where=self.description)
        d = self._endpoint.connect(factory)
        d.addCallbacks(self._connected, self._failed)
        return d

    def _connected(self, protocol):
        self._log.info("Connected to {where}", where=self.description)
        return protocol

    def _failed(self, failure: Failure) -> Failure:
        self._log.warn(
            "Connection to {where} failed: {reason}. Retrying with backoff; check the "
            "address, and that the server is running and reachable.",
            where=self.description,
            reason=failure.getErrorMessage(),
        )
        return failure

    def __repr__(self) -> str:
        return self.description


def retry_policy(
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    factor: float = 2.0,
    jitter: Callable[[], float] = random.random,
) -> Callable[[int], float]:
    """
    Twisted's exponential backoff: C{initial_delay * factor ** attempt} seconds,
    at most C{max_delay}, plus up to one second of C{jitter} so that many
    clients do not all come back at once.
    """
    return backoffPolicy(initial_delay, max_delay, factor, jitter)


def reconnecting_client(
    reactor,
    endpoint: str | IStreamClientEndpoint,
    factory,
    max_delay: float = 60.0,
    jitter: Callable[[], float] = random.random,
) -> ClientService:
    """
    A service that keeps a connection to C{endpoint} open: it never gives up,
    and waits longer after each failed attempt, up to C{max_delay} seconds
    (plus jitter). A successful connection resets the wait.

    @param endpoint: a client endpoint string (C{tcp:host=...:port=...},
        C{tls:...}, C{unix:path=...}), or an endpoint object.
    """
    if isinstance(endpoint, str):
        endpoint = StoryEndpoint(clientFromString(reactor, endpoint), endpoint)
    return ClientService(
        endpoint,
        factory,
        retryPolicy=retry_policy(max_delay=max_delay, jitter=jitter),
        clock=reactor,
    )
