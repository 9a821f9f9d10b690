"""
Who may connect to a server role: an allow list of networks.

With no list, only loopback, private and link-local addresses may connect:
what a LAN set-up needs, and nothing from the open Internet (the idea of
Redis's protected mode). Client certificates, when required, take the place
of the default list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Loopback, private (RFC 1918, RFC 4193) and link-local networks.
LOCAL_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
        "::1/128", "fc00::/7", "fe80::/10",
    )
)  # fmt: skip


def parse_network(text: str) -> Network:
    """
    C{"192.168.0.0/24"}, C{"203.0.113.7"} (one host) or C{"2001:db8::/32"}.

    @raise ValueError: not an address or network, with the reason.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a network such as 192.168.0.0/24 or 2001:db8::/32 ({e})") from None


class AccessPolicy:
    """
    Decides by the peer's IP address whether a connection is accepted.

    @param networks: the allowed networks; C{None} means L{LOCAL_NETWORKS}.
        An empty list allows everyone (used when client certificates are required).
    """

    def __init__(self, networks: Iterable[Network] | None = None) -> None:
        self.default = networks is None
        self.networks = tuple(LOCAL_NETWORKS if networks is None else networks)
        self.everyone = not self.networks

    def allows(self, host: str) -> bool:
        """Whether a peer at IP address C{host} may connect."""
        if self.everyone:
            return True
        from rpisensor.net.peers import ip_of

        address = ip_of(host)
        return address is not None and any(address in network for network in self.networks)

    def describe(self) -> str:
        if self.everyone:
            return "any address"
        if self.default:
            return "loopback, private and link-local networks (the default)"
        return ", ".join(str(n) for n in self.networks)


#: Who may drive outputs when no grant is given: this machine only.
LOOPBACK_NETWORKS: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class ControlGrants:
    """
    Who may drive outputs (C{serve --output}): reading stays open to every
    client that may connect; driving needs the client's address in
    C{networks} (C{--control-allow}) or, over mutual TLS, its certificate's
    CN in C{names} (C{--control-cert}).

    @param networks: C{None}: loopback only, unless C{names} are given (then
        certificates alone grant). A client on a Unix socket counts as
        loopback (127.0.0.1): the socket's file permissions admit it.
    """

    def __init__(self, networks: Iterable[Network] | None = None, names: Iterable[str] = ()) -> None:
        self.names = frozenset(names)
        if networks is None:
            networks = () if self.names else LOOPBACK_NETWORKS
        self.networks = tuple(networks)

    def grants(self, transport) -> bool:
        """Whether the client on C{transport} may drive outputs."""
        return self.granted_address(transport) or self.granted_certificate(transport) is not None

    def granted_address(self, transport) -> bool:
        from rpisensor.net.peers import ip_of

        try:
            peer = transport.getPeer()
        except Exception:
            return False
        host = getattr(peer, "host", None)
        if host is None and hasattr(peer, "name"):  # a Unix socket's client
            host = "127.0.0.1"
        address = ip_of(host)
        return address is not None and any(address in network for network in self.networks)

    def granted_certificate(self, transport) -> str | None:
        """The client certificate's CN if it is one of C{names}, else C{None}."""
        if not self.names:
            return None
        from rpisensor.net.tls import certificate_name

        name = certificate_name(transport)
        return name if name in self.names else None

    def describe(self) -> str:
        parts = []
        if self.networks:
            parts.append(", ".join(str(n) for n in self.networks))
        if self.names:
            parts.append("certificates " + ", ".join(sorted(self.names)))
        return " and ".join(parts) or "nobody"
