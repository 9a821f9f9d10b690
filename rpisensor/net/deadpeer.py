"""
Noticing, on a client's connection, that the server is gone when TCP itself
would not say so for a quarter of an hour: the path died without a FIN or
RST (a NAT forgot the link, the PC lost power), and what the client sends
piles up in buffers until the kernel gives up retransmitting.

The servers of the tutorial cannot answer an application-level ping, so the
kernel's own signals are used, on the client's socket (under TLS too):

 - an idle link is probed with TCP keepalive (C{SO_KEEPALIVE} with
   C{TCP_KEEPIDLE}, C{TCP_KEEPINTVL}, C{TCP_KEEPCNT}): with no answer the
   kernel closes it after about the timeout;
 - while data waits to be acknowledged, a L{DeadPeerWatch} reads the
   socket's C{TCP_INFO} (Linux) and aborts the connection when no
   acknowledgement has come for the timeout, or when the kernel's probes of a
   closed receive window have gone unanswered that long.

Why not C{TCP_USER_TIMEOUT}, which would do the second part in the kernel:
Linux (since 5.11, checked on 6.x by C{tests/test_deadpeer.py}) applies it to
the time a peer's receive window stays closed, even when the peer answers
every window probe. A collector that pauses a reporter for a slow disk is
alive, and must not be dropped; the watch tells the two apart, because a
live peer answers the probes.

A L{DeadPeerDetection} is the policy a reconnecting client applies to each
new connection; another policy (an application heartbeat, for peers that
speak one) can take its place behind the same C{watch} method.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.task import LoopingCall

from rpisensor.net.wording import NamedLogger

_log = NamedLogger("rpisensor.client")

#: Keepalive probes sent, unanswered, before the kernel closes an idle link.
KEEPALIVE_PROBES = 3

# struct tcp_info (linux/tcp.h): the fields read here have been at these
# offsets since Linux 2.6.
_TCP_INFO_LENGTH = 104
_PROBES_OFFSET = 3  # __u8 tcpi_probes: probes sent and not answered
_UNACKED_OFFSET = 24  # __u32 tcpi_unacked: segments sent and not acknowledged
_LAST_ACK_RECV_OFFSET = 56  # __u32 tcpi_last_ack_recv: ms since the last ACK


@dataclass(frozen=True)
class Keepalive:
    """TCP keepalive settings, in whole seconds as the kernel takes them."""

    idle: int
    interval: int
    count: int

    @classmethod
    def within(cls, timeout: float) -> Keepalive:
        """
        Settings that close an idle link whose peer is gone after about
        C{timeout} seconds: the first probe after half of it, then
        L{KEEPALIVE_PROBES} probes spread over the other half. The kernel
        counts whole seconds, so below 4 s it takes a little longer.
        """
        idle = max(1, int(timeout / 2))
        interval = max(1, int((timeout - idle) / KEEPALIVE_PROBES))
        return cls(idle, interval, KEEPALIVE_PROBES)


@dataclass(frozen=True)
class TcpState:
    """What the kernel says about a connection, for L{DeadPeerWatch}."""

    #: Segments sent and not yet acknowledged.
    unacked: int
    #: Window or keepalive probes sent and not answered.
    probes: int
    #: Seconds since the peer last acknowledged anything.
    since_ack: float


def socket_of(transport) -> socket.socket | None:
    """
    The TCP socket under C{transport}, or C{None} (a Unix socket, a test's
    fake transport). Under TLS the transport is a C{TLSMemoryBIOProtocol},
    whose C{getHandle()} is the OpenSSL connection: the TCP transport it
    wraps is its own C{transport}.
    """
    for _ in range(4):  # a few wrappers at most: TLS, perhaps a policy wrapper
        if transport is None:
            return None
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            if handle.family in (socket.AF_INET, socket.AF_INET6) and handle.type == socket.SOCK_STREAM:
                return handle
            return None
        transport = getattr(transport, "transport", None)
    return None


def set_keepalive(sock: socket.socket, keepalive: Keepalive) -> None:
    """Turn keepalive on with C{keepalive}'s timing, where the platform lets us choose it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # TCP_KEEPIDLE is TCP_KEEPALIVE on macOS; Windows and old systems may lack some.
    idle_option = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
    for option, value in (
        (idle_option, keepalive.idle),
        (getattr(socket, "TCP_KEEPINTVL", None), keepalive.interval),
        (getattr(socket, "TCP_KEEPCNT", None), keepalive.count),
    ):
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def can_read_tcp_state() -> bool:
    """Whether L{read_tcp_state} works here: Linux's C{TCP_INFO}."""
    return sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")


def read_tcp_state(sock: socket.socket) -> TcpState | None:
    """The kernel's view of C{sock}; C{None} once it is closed."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
    except OSError:
        return None
    if len(info) < _TCP_INFO_LENGTH:
        return None
    (unacked,) = struct.unpack_from("I", info, _UNACKED_OFFSET)
    (last_ack_ms,) = struct.unpack_from("I", info, _LAST_ACK_RECV_OFFSET)
    return TcpState(unacked=unacked, probes=info[_PROBES_OFFSET], since_ack=last_ack_ms / 1000)


class DeadPeerWatch:
    """
    Looks at one connection every C{timeout / 5} seconds and calls
    C{on_dead(why)} once, then stops, when the peer is gone:

     - data has been waiting for an acknowledgement, and none came for
       C{timeout} seconds; or
     - probes (of a closed window, or keepalive) have stayed unanswered for
       C{timeout} seconds of watching.

    A peer that closed its receive window but answers the kernel's probes
    is alive: nothing is in flight, and its answers reset the probe count.

    @param read_state: returns the connection's L{TcpState}, or C{None}
        once the connection is closed (the watch then stops).
    """

    def __init__(
        self,
        clock,
        timeout: float,
        read_state: Callable[[], TcpState | None],
        on_dead: Callable[[str], object],
    ) -> None:
        self.timeout = timeout
        self._clock = clock
        self._read_state = read_state
        self._on_dead = on_dead
        self._probing_since: float | None = None
        self._probes = 0
        self._was_waiting = False
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    @property
    def interval(self) -> float:
        """Seconds between two looks."""
        return max(0.2, self.timeout / 5)

    def start(self) -> None:
        looking = self._loop.start(self.interval, now=False)
        looking.addErrback(lambda failure: _log.failure("Watching a connection for a dead peer failed", failure))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """Look once (the loop calls this; tests may too)."""
        state = self._read_state()
        if state is None:
            self.stop()
            return
        # Keepalive (set by DeadPeerDetection) keeps since_ack under about half
        # the timeout on a live idle link, so data just sent after a quiet spell
        # does not look overdue; data waiting on the previous look too makes
        # sure this is not a write caught in the moment before its ACK.
        if state.unacked and self._was_waiting and state.since_ack >= self.timeout:
            return self._dead(f"no acknowledgement of the data sent for {state.since_ack:.0f} s")
        self._was_waiting = bool(state.unacked)
        now = self._clock.seconds()
        if state.probes == 0 or state.probes < self._probes:  # answered: the peer is there
            self._probing_since = None
        elif self._probing_since is None:
            self._probing_since = now
        elif now - self._probing_since >= self.timeout:
            return self._dead(f"no answer to the kernel's probes for {now - self._probing_since:.0f} s")
        self._probes = state.probes

    def _dead(self, why: str) -> None:
        self.stop()
        self._on_dead(why)


@dataclass(frozen=True)
class DeadPeerDetection:
    """
    Watch every connection of a client for a dead peer, declaring it dead
    after about C{timeout} seconds without an answer (see the module's
    docstring for how).
    """

    timeout: float = 30.0

    def watch(self, transport, clock, on_dead: Callable[[str], object]) -> DeadPeerWatch | None:
        """
        Start watching the connection under C{transport}; C{None} when there
        is nothing to watch (not TCP). Stop the watch when the connection ends.
        """
        sock = socket_of(transport)
        if sock is None:
            return None
        set_keepalive(sock, Keepalive.within(self.timeout))
        if not can_read_tcp_state():
            return None  # keepalive alone: an idle link is still watched
        watch = DeadPeerWatch(clock, self.timeout, lambda: read_tcp_state(sock), on_dead)
        watch.start()
        return watch
