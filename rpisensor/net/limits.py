"""
The bounds a server role keeps and where it listens, with their defaults; no
Twisted imports, so the command line can show the defaults without loading
the network stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rpisensor import wire
from rpisensor.net.access import AccessPolicy


@dataclass(frozen=True)
class ServerLimits:
    """
    Bounds on what one server accepts; each has an option of the same name.

    @ivar max_message_bytes: longest message, in bytes.
    @ivar max_connections: connections open at once; more are refused.
    @ivar max_connections_per_host: connections open at once from one IP
        address, so that one peer cannot take every slot; loopback and Unix
        socket clients count only toward C{max_connections} (a local tunnel
        or proxy brings every client from 127.0.0.1).
    @ivar handshake_timeout: seconds a client of an C{ssl:} listener has to
        finish the TLS handshake (with C{--client-ca}: to prove who it is);
        then it is closed. It bounds how long a peer that never sends a
        ClientHello, or trickles one, holds a connection slot, also with
        C{idle_timeout} 0.
    @ivar idle_timeout: seconds without a byte from the peer before its
        connection is closed (0: never).
    @ivar message_timeout: seconds a message may take to arrive whole, from
        its first byte to its end (the sensor port's NUL; a web request's
        headers and body); a peer that trickles one byte at a time, each
        resetting the idle timeout, holds a slot no longer than this.
    @ivar max_pending: commands a connection may have waiting for their
        replies before the server stops reading from it.
    """

    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES
    max_connections: int = 2000
    max_connections_per_host: int = 50
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    message_timeout: float = 60.0
    max_pending: int = 100


@dataclass(frozen=True)
class ListenSettings:
    """
    Where a server role listens and what it accepts.

    @ivar endpoints: Twisted server endpoint descriptions, e.g. C{"tcp:22000"}.
    @ivar policy: who may connect; by default loopback and private networks.
    @ivar client_ca: PEM of one or more CA certificates; C{ssl:} listeners
        then require client certificates signed by one of them.
    """

    endpoints: tuple[str, ...] = ("tcp:22000",)
    limits: ServerLimits = ServerLimits()
    policy: AccessPolicy = field(default_factory=AccessPolicy)
    client_ca: bytes | None = None
