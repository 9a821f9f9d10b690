"""
What the server roles (serve, collect) share: who may connect, how many at
once, how long a connection may stay idle, and a stop that lets the work in
flight finish.
"""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.access import AccessPolicy
from rpisensor.limits import ServerLimits
from rpisensor.protocol import NullTerminatedProtocol, peer_text

_log = Logger(namespace="rpisensor.guard")


@implementer(IHandshakeListener)
class ServerConnection(NullTerminatedProtocol):
    """
    Base of the server roles' connections: logs arrivals and departures with
    the peer's address, closes idle connections (see L{GuardedFactory}), and
    says when a TLS client was refused during the handshake (no or a wrong
    client certificate).
    """

    _log = Logger()
    #: How the log calls the peer.
    peer_role = "Client"
    tls_established = False
    #: True once the connection only finishes its work in flight, then closes.
    closing = False
    #: True once the peer has gone.
    gone = False
    _close_timer = None
    #: Seconds a closing connection may take to flush before it is aborted.
    CLOSE_GRACE = 10.0

    def connectionMade(self) -> None:
        self.peer = peer_text(self.transport)
        self.last_heard = self.factory.clock.seconds()
        self.factory.connection_opened(self)
        self._log.info("{role} connected from {peer}", role=self.peer_role, peer=self.peer)

    def dataReceived(self, data: bytes) -> None:
        if data:  # (b"" is a replay of held messages, not the peer speaking)
            if self.closing:
                return  # bytes after we decided to close are not read
            self.last_heard = self.factory.clock.seconds()
        super().dataReceived(data)

    def messageTooLong(self, length: int) -> None:
        """Stop reading, answer what came before the long message, then close."""
        self.logTooLong(length)
        self.closeAfterWork()

    def closeAfterWork(self) -> None:
        """
        Read nothing more; close once the work in flight is done (L{busy} is
        false), or abort after C{CLOSE_GRACE} seconds, whichever comes first.
        """
        if self.closing:
            return
        self.closing = True
        self.transport.pauseProducing()  # messages already received are still handled
        self._close_timer = self.factory.clock.callLater(self.CLOSE_GRACE, self.transport.abortConnection)
        self.workDone()

    def workDone(self) -> None:
        """Subclasses call this when work in flight finished; closes if closing."""
        if self.closing and not self.busy and not (self._held and self._buffer):
            self.transport.loseConnection()

    def handshakeCompleted(self) -> None:
        self.tls_established = True

    def timeoutConnection(self) -> None:
        self._log.info(
            "Closing the connection from {peer}: nothing received for {seconds} s "
            "(--idle-timeout).",
            peer=self.peer,
            seconds=self.factory.limits.idle_timeout,
        )
        self.closeAfterWork()

    def connectionLost(self, reason: Failure) -> None:
        self.closing = self.gone = True
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self.factory.connection_closed(self)
        if ISSLTransport.providedBy(self.transport) and not self.tls_established:
            self._log.warn(
                "Refused {peer}: the TLS handshake failed ({reason}). The client may lack a "
                "certificate signed by --client-ca, or may not trust this server's certificate.",
                peer=self.peer,
                reason=reason.getErrorMessage(),
            )
        else:
            self._log.info("{role} {peer} disconnected", role=self.peer_role, peer=self.peer)

    @property
    def busy(self) -> bool:
        """Whether work for this connection is still in flight (see L{GuardedFactory.drain})."""
        return False


class GuardedFactory(Factory):
    """
    Base of the server roles' factories: refuses peers the access policy does
    not allow, and connections beyond C{limits.max_connections}.
    """

    _log = Logger()
    noisy = False

    def __init__(self, limits: ServerLimits, policy: AccessPolicy | None, clock) -> None:
        self.limits = limits
        self.clock = clock
        self.maxMessageBytes = limits.max_message_bytes
        self.policy = policy if policy is not None else AccessPolicy()
        self.connections: set[ServerConnection] = set()
        self.refused = 0
        self._sweeper: LoopingCall | None = None

    def connection_opened(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        if self._sweeper is None and self.limits.idle_timeout > 0:
            self._sweeper = LoopingCall(self._close_idle)
            self._sweeper.clock = self.clock
            self._sweeper.start(self.limits.idle_timeout / 4, now=False)

    def connection_closed(self, connection: ServerConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    def _close_idle(self) -> None:
        quiet_since = self.clock.seconds() - self.limits.idle_timeout
        for connection in [c for c in self.connections if c.last_heard <= quiet_since]:
            if not connection.closing:
                connection.timeoutConnection()

    #: Refusals logged one by one per window; beyond that they are counted,
    #: and the count is logged, so a flood cannot fill the disk with log lines.
    REFUSALS_LOGGED_PER_WINDOW = 5
    REFUSAL_WINDOW = 10.0
    _window_start = float("-inf")
    _logged_in_window = 0
    _unlogged_refusals = 0

    def _refuse(self, format: str, **fields) -> None:
        self.refused += 1
        now = self.clock.seconds()
        if now - self._window_start >= self.REFUSAL_WINDOW:
            if self._unlogged_refusals:
                self._log.warn(
                    "{count} more connections were refused in the last {seconds:.0f} s "
                    "(not logged one by one).",
                    count=self._unlogged_refusals,
                    seconds=now - self._window_start,
                )
            self._window_start, self._logged_in_window, self._unlogged_refusals = now, 0, 0
        if self._logged_in_window < self.REFUSALS_LOGGED_PER_WINDOW:
            self._logged_in_window += 1
            self._log.warn(format, **fields)
        else:
            self._unlogged_refusals += 1

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if host is not None and not self.policy.allows(host):
            self._refuse(
                "Refused a connection from {host}: it is not in the allowed networks ({allowed}). "
                "To accept it, add --allow with its network (e.g. --allow {host}/32), ideally "
                "together with TLS and --client-ca; see the README's Security section.",
                host=host,
                allowed=self.policy.describe(),
            )
            return None
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(
                "Refused a connection from {host}: {count} connections are open, the limit "
                "(--max-connections).",
                host=host or "a local client",
                count=len(self.connections),
            )
            return None
        return super().buildProtocol(addr)

    async def drain(self, clock, timeout: float) -> None:
        """
        Let every connection finish the work in flight (replies to commands
        already received), then close them all; give up waiting after
        C{timeout} seconds and close them anyway.
        """
        deadline = clock.seconds() + timeout
        for connection in list(self.connections):
            connection.closeAfterWork()  # reads nothing more; closes once its work is done
        while self.connections and clock.seconds() < deadline:
            await deferLater(clock, 0.05, lambda: None)
        for connection in list(self.connections):
            connection.transport.abortConnection()


class DrainService(Service):
    """On stop, drains C{factory}'s connections (see L{GuardedFactory.drain})."""

    def __init__(self, factory: GuardedFactory, clock, timeout: float) -> None:
        self.factory = factory
        self._clock = clock
        self.timeout = timeout

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self.factory.drain(self._clock, self.timeout))


class StopInOrder(MultiService):
    """
    A MultiService whose children stop one after the other, last added first,
    each once the one before it has finished: listeners, then the connections'
    work in flight, then the pools and files they use.
    """

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                _log.failure("Stopping {child} failed; stopping the others anyway", child=child)


def ensure_file_limit(max_connections: int, spare: int = 64) -> None:
    """
    Raise the soft open-files limit so C{max_connections} sockets fit (plus
    C{spare} for files, pipes and threads), as far as the hard limit allows.
    """
    import resource

    needed = max_connections + spare
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            _log.warn(
                "Only {target} files may be open (hard limit), fewer than --max-connections "
                "{max_connections} needs; raise the limit (LimitNOFILE= in a systemd unit, "
                "ulimit -n) or lower --max-connections.",
                target=target,
                max_connections=max_connections,
            )
