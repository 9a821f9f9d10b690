"""
Who may connect to a server role and how many at once, and the sweep that
closes idle connections: what C{serve} and C{collect} share.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from rpisensor.lograte import RateLimitedLog
from rpisensor.net.access import AccessPolicy
from rpisensor.net.connection import ServerConnection
from rpisensor.net.limits import ServerLimits


class AdmittingFactory(Factory):
    """
    Base of the server roles' factories: refuses peers the access policy does
    not allow, and connections beyond C{limits.max_connections}; closes idle
    connections with one sweep for all of them.
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
        # A flood of refused connections cannot fill the disk with log lines.
        self._refusals = RateLimitedLog(clock, self._log, burst=5, window=10.0)
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

    def _refuse(self, format: str, **fields) -> None:
        self.refused += 1
        self._refusals.warn(format, key="refused", **fields)

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


