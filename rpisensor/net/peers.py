"""
How log lines name the other end of a connection, and say why a connection
ended, in plain words.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import error
from twisted.python.failure import Failure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def ip_of(host: str | None) -> IPAddress | None:
    """
    The IP address in C{host} (an address's C{host}), or C{None} if it is
    none: an IPv4-mapped IPv6 address gives its IPv4 address, and a zone
    (C{fe80::1%eth0}) is dropped, so that one machine has one address.
    """
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(transport) -> bool:
    """Whether the peer is on this machine: a loopback address or a Unix socket."""
    try:
        peer = transport.getPeer()
    except Exception:
        return False
    host = getattr(peer, "host", None)
    if host is None:
        return hasattr(peer, "name")  # a Unix socket's peer
    address = ip_of(host)
    return address is not None and address.is_loopback


def plain_reason(reason: Failure | BaseException) -> str:
    """
    Why a connection ended or failed, in words a user can act on.

    Twisted's own texts name its classes and methods ("lost in a non-clean
    fashion", C{ITCPTransport.abortConnection}); OpenSSL's hide the reason
    in a list of tuples.
    """
    value = reason.value if isinstance(reason, Failure) else reason
    if isinstance(value, error.ConnectionDone):
        return "closed by the other end"
    if isinstance(value, error.ConnectionAborted):
        return "closed by this program"
    if isinstance(value, error.ConnectionLost):
        return "the connection broke (reset, or closed without a goodbye)"
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused (nothing listens there, or a firewall refuses)"
    if isinstance(value, error.TimeoutError):
        return "timed out"
    if type(value).__module__ == "OpenSSL.SSL":
        return f"TLS error: {_openssl_reasons(value)}"
    return str(value) or type(value).__name__


def _openssl_reasons(value: BaseException) -> str:
    """The reason strings of an C{OpenSSL.SSL.Error}: its args are lists of (library, function, reason)."""
    reasons = []
    for arg in value.args:
        for entry in arg if isinstance(arg, list) else [arg]:
            text = entry[-1] if isinstance(entry, tuple) and entry else entry
            if isinstance(text, str) and text and text not in reasons:
                reasons.append(text)
    return "; ".join(reasons) or "the TLS connection failed"
