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
