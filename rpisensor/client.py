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
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport, IStreamClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.protocol import NullTerminatedProtocol, peer_text


@implementer(IHandshakeListener)
class StoryProtocol(NullTerminatedProtocol):
    """
    Base of the client roles' protocols. It knows when a connection is ready
    (at once for plain TCP, after the handshake for TLS), and logs disconnects
    in the tutorial's words, and TLS failures with what to check.
    """

    _log = Logger()
    ready = False

    def connectionMade(self) -> None:
        self._ready_waiters: list[Deferred] = []
        if not ISSLTransport.providedBy(self.transport):
            self.ready = True

    def handshakeCompleted(self) -> None:
        self.ready = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    def when_ready(self) -> Deferred:
        """Fires with this protocol once the connection is usable (TLS handshake done)."""
        if self.ready:
            return succeed(self)
        d: Deferred = Deferred()
        self._ready_waiters.append(d)
        return d

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        where = peer_text(self.transport)
        if self.ready:
            self._log.info("Disconnected from {where}: {reason}", where=where, reason=reason.getErrorMessage())
            return
        self._log.warn(
            "TLS with {where} failed: {reason}. Check that trustRoots= names the CA that "
            "signed the server's certificate, that host= is a name in that certificate, and, "
            "if the server wants client certificates, certificate= and privateKey=.",
            where=where,
            reason=reason.getErrorMessage(),
        )
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(reason)


def wait_until_ready(protocol) -> Deferred | None:
    """
    For C{ClientService(prepareConnection=...)}: with a L{StoryProtocol}, a
    failed TLS handshake counts as a failed attempt (so backoff applies).
    """
    when_ready = getattr(protocol, "when_ready", None)
    return when_ready() if when_ready is not None else None


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
        super().connectionMade()
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
        prepareConnection=wait_until_ready,
    )
