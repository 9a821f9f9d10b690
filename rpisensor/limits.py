"""
The bounds a server role keeps, with their defaults; no Twisted imports, so
the command line can show the defaults without loading the network stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpisensor import wire


@dataclass(frozen=True)
class ServerLimits:
    """
    Bounds on what one server accepts; each has an option of the same name.

    @ivar max_message_bytes: longest message, in bytes.
    @ivar max_connections: connections open at once; more are refused.
    @ivar idle_timeout: seconds without a byte from the peer before its
        connection is closed (0: never).
    @ivar max_pending: commands a connection may have waiting for their
        replies before the server stops reading from it.
    """

    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES
    max_connections: int = 2000
    idle_timeout: float = 300.0
    max_pending: int = 100
