"""
How log lines name the other end of a connection.
"""

from __future__ import annotations

import ipaddress


def peer_text(transport) -> str:
    """A short, human form of a transport's peer address for log lines."""
    try:
        peer = transport.getPeer()
    except Exception:
        return "an unknown peer"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(peer, "name", None)
    if not name:  # a Unix socket's client has no name: say which socket it came in on
        name = getattr(transport.getHost(), "name", None)
        if not name:
            return "a local client"
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return f"local socket {name}"



def is_loopback(transport) -> bool:
    """Whether the peer is on this machine: a loopback address or a Unix socket."""
    try:
        peer = transport.getPeer()
    except Exception:
        return False
    host = getattr(peer, "host", None)
    if host is None:
        return hasattr(peer, "name")  # a Unix socket's peer
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
