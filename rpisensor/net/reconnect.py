"""
Client connections that count once usable (after the TLS handshake, for
C{tls:}), and a service that keeps one open, reconnecting with backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectingCancelledError, ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer


class HandshakeFailed(ConnectionError):
    """
    The connection closed before its TLS handshake completed.

    @ivar reason: the L{Failure} that closed it (an OpenSSL error, or a
        C{service_identity} verification error for a name mismatch).
    """

    def __init__(self, message: str, reason: Failure) -> None:
        super().__init__(message)
        self.reason = reason


@implementer(IHandshakeListener)
class _Gate(Protocol):
    """
    Holds a new connection until it is usable, then hands it to the protocol
    the caller's factory builds: at once for plain TCP, after the handshake
    for TLS. So a failed handshake is a failed connection attempt (backoff
    applies), not a connection made and lost.
    """

    def __init__(self, factory, addr, ready: Deferred, tls: bool) -> None:
        self._factory = factory
        self._addr = addr
        self._ready = ready
        self._tls = tls
        self._inner = None

    def connectionMade(self) -> None:
        if not self._tls:
            self._open()

    def handshakeCompleted(self) -> None:
        self._open()
        if IHandshakeListener.providedBy(self._inner):
            self._inner.handshakeCompleted()

    def _open(self) -> None:
        inner = self._factory.buildProtocol(self._addr)
        if inner is None:
            self.transport.loseConnection()
            return
        self._inner = inner
        self.dataReceived = inner.dataReceived  # from now on, straight through
        inner.makeConnection(self.transport)
        if not self._ready.called:
            self._ready.callback(inner)

    def dataReceived(self, data: bytes) -> None:
        pass  # nothing can arrive before the handshake

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._inner is not None:
            self._inner.connectionLost(reason)
        elif not self._ready.called:
            what = "TLS handshake failed" if self._tls else "closed at once"
            self._ready.errback(HandshakeFailed(f"{what}: {reason.getErrorMessage()}", reason))


class _GateFactory(Factory):
    noisy = False

    def __init__(self, factory, ready: Deferred, tls: bool) -> None:
        self._factory = factory
        self._ready = ready
        self._tls = tls

    def buildProtocol(self, addr) -> _Gate:
        return _Gate(self._factory, addr, self._ready, self._tls)


def _connect_failed(ready: Deferred, failure: Failure) -> None:
    # A cancelled attempt is already settled by ready's own cancel (CancelledError).
    if not ready.called and not failure.check(ConnectingCancelledError, CancelledError):
        ready.errback(failure)


@implementer(IStreamClientEndpoint)
class ReadyEndpoint:
    """
    Wraps a client endpoint so that a connection counts once it is usable
    (after the TLS handshake, for C{tls:}), and tells the connection story in
    the log in the tcpcom tutorial's words: connecting, connected, failed.
    """

    _log = Logger(namespace="rpisensor.net.reconnect")

    #: Seconds a TLS handshake may take before the attempt counts as failed.
    HANDSHAKE_TIMEOUT = 30.0

    def __init__(self, endpoint: IStreamClientEndpoint, description: str, clock=None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self._endpoint = endpoint
        self._clock = clock
        self.description = description
        self._tls = description.startswith(("tls:", "ssl:"))

    def connect(self, factory) -> Deferred:
        self._log.info("Connecting to {where}...", where=self.description)
        gates: list[_Gate] = []

        def cancel(_):
            connecting.cancel()
            for gate in gates:
                if gate.transport is not None:
                    gate.transport.abortConnection()

        ready: Deferred = Deferred(cancel)
        if self._tls:  # a peer that accepts TCP but never completes the handshake
            ready.addTimeout(self.HANDSHAKE_TIMEOUT, self._clock)
        gate_factory = _GateFactory(factory, ready, self._tls)
        connecting = self._endpoint.connect(gate_factory)
        connecting.addCallbacks(gates.append, partial(_connect_failed, ready))
        return ready.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol):
        self._log.info("Connected to {where}", where=self.description)
        return protocol

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(HandshakeFailed) and self._tls:
            self._log.warn(
                "Connection to {where} failed: {reason}. Check that trustRoots= names the CA "
                "that signed the server's certificate, that host= is a name in that "
                "certificate, and, if the server wants client certificates, certificate= and "
                "privateKey=. Retrying with backoff.",
                where=self.description,
                reason=failure.getErrorMessage(),
            )
        elif not failure.check(CancelledError):
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
        endpoint = ReadyEndpoint(clientFromString(reactor, endpoint), endpoint, reactor)
    return ClientService(
        endpoint,
        factory,
        retryPolicy=retry_policy(max_delay=max_delay, jitter=jitter),
        clock=reactor,
    )
