"""
Client connections that count once usable (after the TLS handshake, for
C{tls:}), watched for a dead peer, and a service that keeps one open:
reconnecting promptly after losing a connection that worked, with backoff
while attempts fail.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, clientFromString
from twisted.internet.error import ConnectingCancelledError, ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.lograte import RateLimitedLog
from rpisensor.net.backoff import STORY_BURST, RetrySchedule, retry_delay
from rpisensor.net.deadpeer import DeadPeerDetection, DeadPeerWatch
from rpisensor.net.wording import NamedLogger, plain_reason

__all__ = [
    "DEFAULT_DEAD_PEER_TIMEOUT",
    "EndpointList",
    "HandshakeFailed",
    "ReadyEndpoint",
    "ReconnectingService",
    "reconnecting_client",
    "retry_delay",
]

#: Seconds without an answer before a client's link counts as dead.
DEFAULT_DEAD_PEER_TIMEOUT = 30.0


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
    applies), not a connection made and lost. It also watches the link for a
    dead peer, and tells the endpoint's L{RetrySchedule} how the connection
    went.
    """

    def __init__(self, endpoint: ReadyEndpoint, factory, addr, ready: Deferred) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._addr = addr
        self._ready = ready
        self._inner = None
        self._watch: DeadPeerWatch | None = None

    def connectionMade(self) -> None:
        dead_peer = self._endpoint.dead_peer
        if dead_peer is not None:
            self._watch = dead_peer.watch(self.transport, self._endpoint.clock, self._peer_is_dead)
        if not self._endpoint.tls:
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
        if self._endpoint.schedule is not None:
            self._endpoint.schedule.connected()
        inner.makeConnection(self.transport)
        if not self._ready.called:
            self._ready.callback(inner)

    def dataReceived(self, data: bytes) -> None:
        pass  # nothing can arrive before the handshake

    def _peer_is_dead(self, why: str) -> None:
        self._endpoint.story.warn(
            "No answer from {where}: {why}. The link looks dead (--dead-peer-timeout {timeout:g} s); "
            "reconnecting.",
            where=self._endpoint.description,
            why=why,
            timeout=self._endpoint.dead_peer.timeout,
        )
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._inner is not None:
            if self._endpoint.schedule is not None:  # before the client service asks it for a delay
                refused = getattr(self._inner, "parting_error", None) is not None
                self._endpoint.schedule.lost(refused=refused)
            self._inner.connectionLost(reason)
        elif not self._ready.called:
            what = "TLS handshake failed" if self._endpoint.tls else "closed at once"
            self._ready.errback(HandshakeFailed(f"{what}: {reason.getErrorMessage()}", reason))


class _GateFactory(Factory):
    noisy = False

    def __init__(self, endpoint: ReadyEndpoint, factory, ready: Deferred) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._ready = ready

    def buildProtocol(self, addr) -> _Gate:
        return _Gate(self._endpoint, self._factory, addr, self._ready)


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

    @param schedule: told how each attempt and connection went, when the
        endpoint serves a reconnecting client.
    @param dead_peer: how each connection is watched for a dead peer; not at
        all when C{None}.
    """

    _log = NamedLogger("rpisensor.client")

    #: Seconds a TLS handshake may take before the attempt counts as failed.
    HANDSHAKE_TIMEOUT = 30.0

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        description: str,
        clock=None,
        schedule: RetrySchedule | None = None,
        dead_peer: DeadPeerDetection | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self._endpoint = endpoint
        self.clock = clock
        self.description = description
        self.schedule = schedule
        self.dead_peer = dead_peer
        self.tls = description.lower().startswith(("tls:", "ssl:"))
        self.story = RateLimitedLog(clock, self._log, burst=STORY_BURST)

    def connect(self, factory) -> Deferred:
        self.story.info("Connecting to {where}...", where=self.description)
        gates: list[_Gate] = []

        def cancel(_):
            connecting.cancel()
            for gate in gates:
                if gate.transport is not None:
                    gate.transport.abortConnection()

        ready: Deferred = Deferred(cancel)
        if self.tls:  # a peer that accepts TCP but never completes the handshake
            ready.addTimeout(self.HANDSHAKE_TIMEOUT, self.clock)
        connecting = self._endpoint.connect(_GateFactory(self, factory, ready))
        connecting.addCallbacks(gates.append, partial(_connect_failed, ready))
        return ready.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol):
        self.story.info("Connected to {where}", where=self.description)
        return protocol

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(CancelledError):
            return failure
        if self.schedule is not None:
            self.schedule.attempt_failed()
        if failure.check(HandshakeFailed) and self.tls:
            self.story.warn(
                "Connection to {where} failed: {reason}. Check that trustRoots= names the CA "
                "that signed the server's certificate, that host= is a name in that "
                "certificate, and, if the server wants client certificates, certificate= and "
                "privateKey=.",
                where=self.description,
                reason=failure.getErrorMessage(),
            )
        else:
            self.story.warn(
                "Connection to {where} failed: {reason}. Check the address, and that the "
                "server is running and reachable.",
                where=self.description,
                reason=plain_reason(failure),
            )
        return failure

    def __repr__(self) -> str:
        return self.description


@implementer(IStreamClientEndpoint)
class EndpointList:
    """
    Several servers for one client (collectors that share a database): each
    connection attempt tries them in turn, starting with the one that worked
    last, until one connects; the attempt fails only if all of them fail.

    @ivar dead_peer: how each connection is watched (the same for all).
    """

    def __init__(self, endpoints: Sequence[ReadyEndpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self.description = " or ".join(e.description for e in self.endpoints)
        self.dead_peer = self.endpoints[0].dead_peer
        self.schedule = self.endpoints[0].schedule
        #: The endpoint that connected last: the next attempt starts there.
        self.current = 0

    def connect(self, factory) -> Deferred:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory):
        count = len(self.endpoints)
        failure = None
        for step in range(count):
            index = (self.current + step) % count
            try:
                protocol = await self.endpoints[index].connect(factory)
            except CancelledError:
                raise
            except Exception:
                failure = Failure()
                continue
            self.current = index
            return protocol
        failure.raiseException()

    def __repr__(self) -> str:
        return self.description


def client_endpoint(reactor, description: str) -> IStreamClientEndpoint:
    """
    The client endpoint for C{description}; a C{tcp:} one is a
    L{HostnameEndpoint}, so that a name with several addresses (IPv4 and
    IPv6, or several collectors behind one DNS name) is tried address by
    address, as C{tls:} endpoints already are, instead of the first alone.
    """
    endpoint = clientFromString(reactor, description)
    if isinstance(endpoint, (TCP4ClientEndpoint, TCP6ClientEndpoint)):
        # Twisted has no endpoint string for a HostnameEndpoint: the tcp: one's parsed fields are taken.
        return HostnameEndpoint(
            reactor, endpoint._host, endpoint._port, timeout=endpoint._timeout, bindAddress=endpoint._bindAddress
        )
    return endpoint


def _without_retry_lines(event: dict) -> None:
    """
    Pass C{ClientService}'s log events on, except its C{Scheduling retry 1 to
    connect ... in 2.625943262183468 seconds}: L{RetrySchedule} logs its own.
    """
    if str(event.get("log_format", "")).startswith("Scheduling retry"):
        return
    globalLogPublisher(event)


class ReconnectingService(ClientService):
    """
    A C{ClientService} whose retry lines come from its L{RetrySchedule}.

    @ivar endpoint: the L{ReadyEndpoint} it connects through, with its
        C{schedule} and C{dead_peer} policy.
    """

    _log = NamedLogger("rpisensor.client", observer=_without_retry_lines)

    def __init__(self, endpoint: ReadyEndpoint, factory, retryPolicy=None, clock=None) -> None:
        super().__init__(endpoint, factory, retryPolicy=retryPolicy, clock=clock)
        self.endpoint = endpoint

    def stopService(self):
        """Stop; the connection this closes knows it was closed from this side (its log says so)."""
        current = self.whenConnected()
        if current.called:  # (connected: it fired at once with the protocol)
            current.addCallback(_closed_by_us)
        else:
            current.addErrback(lambda _: None)
            current.cancel()
        return super().stopService()


def _closed_by_us(protocol) -> None:
    protocol.closed_by_us = True


def reconnecting_client(
    reactor,
    endpoint: str | Sequence[str] | IStreamClientEndpoint,
    factory,
    max_delay: float = 60.0,
    jitter: Callable[[], float] = random.random,
    dead_peer_timeout: float = DEFAULT_DEAD_PEER_TIMEOUT,
    description: str | None = None,
    dead_peer=None,
) -> ReconnectingService:
    """
    A service that keeps a connection to C{endpoint} open: it never gives up,
    and tries again promptly (in well under a second) after losing a
    connection that worked, and ever later while attempts fail, up to
    C{max_delay} seconds plus jitter. See L{RetrySchedule}.

    @param endpoint: a client endpoint string (C{tcp:host=...:port=...},
        C{tls:...}, C{unix:path=...}), or an endpoint object; or several
        strings, tried in turn (see L{EndpointList}).
    @param dead_peer_timeout: seconds without an answer from the server after
        which the link counts as dead and is replaced (see
        L{rpisensor.net.deadpeer}); C{0} turns the watch off.
    @param description: how the log names the server; by default the
        endpoint string, or the endpoint object's C{repr}.
    @param dead_peer: how each connection is watched, instead of
        C{DeadPeerDetection(dead_peer_timeout)}: any object with that
        class's C{watch} method (say, an application heartbeat).
    """
    if not isinstance(endpoint, str) and isinstance(endpoint, Sequence):
        if len(endpoint) > 1:
            return _reconnecting_to_any(reactor, endpoint, factory, max_delay, jitter, dead_peer_timeout, dead_peer)
        [endpoint] = endpoint
    if isinstance(endpoint, str):
        description = description or endpoint
        endpoint = client_endpoint(reactor, endpoint)
    elif isinstance(endpoint, ReadyEndpoint):
        description = description or endpoint.description
        endpoint = endpoint._endpoint
    description = description or repr(endpoint)
    schedule = RetrySchedule(reactor, description, max_delay=max_delay, jitter=jitter)
    if dead_peer is None and dead_peer_timeout > 0:
        dead_peer = DeadPeerDetection(dead_peer_timeout)
    ready = ReadyEndpoint(endpoint, description, reactor, schedule=schedule, dead_peer=dead_peer)
    return ReconnectingService(ready, factory, retryPolicy=schedule, clock=reactor)


def _reconnecting_to_any(
    reactor, descriptions: Sequence[str], factory, max_delay, jitter, dead_peer_timeout, dead_peer
) -> ReconnectingService:
    """L{reconnecting_client} to whichever of several servers answers (see L{EndpointList})."""
    schedule = RetrySchedule(reactor, " or ".join(descriptions), max_delay=max_delay, jitter=jitter)
    if dead_peer is None and dead_peer_timeout > 0:
        dead_peer = DeadPeerDetection(dead_peer_timeout)
    endpoints = EndpointList([
        ReadyEndpoint(client_endpoint(reactor, d), d, reactor, schedule=schedule, dead_peer=dead_peer)
        for d in descriptions
    ])  # fmt: skip
    return ReconnectingService(endpoints, factory, retryPolicy=schedule, clock=reactor)
