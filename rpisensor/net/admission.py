"""
Who may connect to a server role and how many at once, and the sweep that
closes idle connections: what C{serve} and C{collect} share.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor import wire
from rpisensor.lograte import RateLimitedLog
from rpisensor.net.access import AccessPolicy
from rpisensor.net.connection import Pause, ServerConnection
from rpisensor.net.limits import ServerLimits
from rpisensor.net.peers import ip_of

#: Lines of one kind about connections (arrivals, departures, timeouts) per window.
CONNECTION_LOG_BURST = 20
#: Seconds of one window of those lines.
CONNECTION_LOG_WINDOW = 60.0


class Refusal(Protocol):
    """
    Tells a refused client why in one C{error: ...} message, then closes.

    Cheap enough for a flood: one short write that fits any socket buffer, a
    close, no timer and no count. On a TLS listener the connection is closed
    at once instead: saying it over TLS would cost a handshake per refusal.
    """

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    def connectionMade(self) -> None:
        if ISSLTransport.providedBy(self.transport):
            self.transport.abortConnection()
            return
        self.transport.write(self.frame)
        self.transport.loseConnection()


class AdmittingFactory(Factory):
    """
    Base of the server roles' factories: refuses peers the access policy does
    not allow, and connections beyond C{limits.max_connections} (in all) or
    C{limits.max_connections_per_host} (from one address), each with one
    line saying why; closes idle connections with one sweep for all of them.

    @ivar peer_log: the rate-limited log of every line a peer can trigger
        on a connection (arrivals, departures, bad messages, timeouts), shared
        by all connections so that a flood of them logs a bounded number of
        lines plus a summary.
    """

    _log = Logger()
    noisy = False

    def __init__(self, limits: ServerLimits, policy: AccessPolicy | None, clock) -> None:
        self.limits = limits
        self.clock = clock
        self.maxMessageBytes = limits.max_message_bytes
        self.policy = policy if policy is not None else AccessPolicy()
        self.connections: set[ServerConnection] = set()
        self._per_host: Counter[str] = Counter()
        self.refused = 0
        # A flood of refused connections cannot fill the disk with log lines.
        self._refusals = RateLimitedLog(clock, self._log, burst=5, window=10.0)
        self._problems = RateLimitedLog(clock, self._log)
        connection_logger = getattr(self.protocol, "_log", None) or self._log
        self.peer_log = RateLimitedLog(
            clock, connection_logger, burst=CONNECTION_LOG_BURST, window=CONNECTION_LOG_WINDOW
        )
        self._sweeper: LoopingCall | None = None
        self._empty_waiters: list[Deferred[None]] = []

    # -- admission ------------------------------------------------------------

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if host is not None and not self.policy.allows(host):
            return self._refuse(
                "Refused a connection from {host}: it is not in the allowed networks ({allowed}). "
                "To accept it, add --allow with its network (e.g. --allow {host}/32), ideally "
                "together with TLS and --client-ca; see the documentation's security guide (docs/howto/security.md).",
                f"error: refused: {host} is not in the allowed networks",
                host=host,
                allowed=self.policy.describe(),
            )
        if len(self.connections) >= self.limits.max_connections:
            return self._refuse(
                "Refused a connection from {host}: {count} connections are open, the limit "
                "(--max-connections).",
                "error: busy: too many connections",
                host=host or "a local client",
                count=len(self.connections),
            )
        counted = counted_host(host)
        if counted is not None and self._per_host[counted] >= self.limits.max_connections_per_host:
            return self._refuse(
                "Refused a connection from {host}: {count} connections from that address are "
                "open, the limit (--max-connections-per-host).",
                f"error: busy: too many connections from {host}",
                host=host,
                count=self._per_host[counted],
            )
        protocol = super().buildProtocol(addr)
        protocol.counted_host = counted
        return protocol

    def _refuse(self, format: str, reply: str, **fields) -> Refusal:
        self.refused += 1
        self._refusals.warn(format, key="refused connections", **fields)
        return Refusal(wire.frame(reply))

    # -- the connections ------------------------------------------------------

    def connection_opened(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        counted = connection.counted_host
        if counted is not None:
            self._per_host[counted] += 1
        if self._sweeper is None and self._sweep_interval:
            self._start_sweeping()

    def connection_closed(self, connection: ServerConnection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        counted = connection.counted_host
        if counted is not None:
            self._per_host[counted] -= 1
            if not self._per_host[counted]:
                del self._per_host[counted]
        if not self.connections:
            self._stop_sweeping()
            waiters, self._empty_waiters = self._empty_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def connections_from(self, host: str) -> int:
        """How many open connections count toward C{host}'s limit (0 for local ones)."""
        counted = counted_host(host)
        return self._per_host[counted] if counted is not None else 0

    # -- the idle sweep -------------------------------------------------------

    @property
    def _sweep_interval(self) -> float:
        """Seconds between sweeps: a quarter of the shortest timeout they enforce (0: none)."""
        timeouts = [t for t in (self.limits.idle_timeout, self.limits.message_timeout) if t > 0]
        return min(timeouts) / 4 if timeouts else 0.0

    def _start_sweeping(self) -> None:
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(self._sweep_interval, now=False).addErrback(self._sweeper_died)

    def _sweep(self) -> None:
        """One sweep; an error is logged and the next sweep still runs."""
        try:
            self._close_idle()
        except Exception:
            self._problems.error(
                "Closing idle connections failed; trying again in {seconds} s",
                key="idle sweep failures",
                seconds=self._sweep_interval,
                log_failure=Failure(),
            )

    def _close_idle(self) -> None:
        """
        Close the connections that sent nothing for C{idle_timeout} seconds,
        except those we made wait: a connection paused for C{PENDING} waits
        for our sensor or disk, not the other way round. A client that does
        not read its replies (paused for C{WRITES}) is idle like a silent one.
        Close too those whose message now arriving began C{message_timeout}
        seconds ago (a slow trickle resets the idle time with every byte),
        unless they wait for us.
        """
        now = self.clock.seconds()
        limits = self.limits
        quiet_since = now - limits.idle_timeout if limits.idle_timeout > 0 else None
        begun_before = now - limits.message_timeout if limits.message_timeout > 0 else None
        for connection in list(self.connections):
            if connection.closing or connection.paused & Pause.PENDING:
                continue
            if quiet_since is not None and connection.last_heard <= quiet_since:
                connection.timeoutConnection()
            elif (
                begun_before is not None
                and connection.partial_since is not None
                and connection.partial_since <= begun_before
                and not connection.paused
            ):
                connection.messageTooSlow()

    def _sweeper_died(self, failure: Failure) -> None:
        """Only reached if the sweep itself could not run: start a new one."""
        self._problems.error(
            "The idle sweep stopped; starting it again", key="idle sweep failures", log_failure=failure
        )
        self._sweeper = None
        if self.connections:
            self._start_sweeping()

    def _stop_sweeping(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper.running:
            sweeper.stop()

    # -- stopping -------------------------------------------------------------

    def drain(self, clock, timeout: float) -> Deferred[None]:
        """
        Let every connection finish the work in flight (replies to commands
        already received), then close them all; give up waiting after
        C{timeout} seconds and abort the rest.

        @return: fires once every connection closed, or at the deadline
            (after aborting those left).
        """
        for connection in list(self.connections):
            connection.closeAfterWork()  # reads nothing more; closes once its work is done
        if not self.connections:
            return succeed(None)
        drained: Deferred[None] = Deferred()
        self._empty_waiters.append(drained)

        def give_up() -> None:
            for connection in list(self.connections):
                connection.transport.abortConnection()
            if drained in self._empty_waiters:
                self._empty_waiters.remove(drained)
                drained.callback(None)

        deadline = clock.callLater(timeout, give_up)

        def stop_waiting(result):
            if deadline.active():
                deadline.cancel()
            return result

        return drained.addBoth(stop_waiting)

    def flush_logs(self) -> None:
        """Log the summaries of lines left out so far (at stop: none is lost)."""
        for log in (self._refusals, self.peer_log, self._problems):
            log.flush()


def counted_host(host: str | None) -> str | None:
    """
    The key C{host} counts under for C{max_connections_per_host}: its IP
    address, normalised; C{None} (not counted) for loopback and for peers
    without an IP address (Unix sockets).
    """
    address = ip_of(host)
    if address is None or address.is_loopback:
        return None
    return str(address)
