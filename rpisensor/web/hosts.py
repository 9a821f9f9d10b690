"""
The names a request's C{Host} header may give: this machine's own. A page
of another site whose name its DNS points at this machine (DNS rebinding)
sends its own name, so without this check it could read the API as if it
were this page; a browser always sends the name it asked for.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

from rpisensor.net.peers import ip_of


def host_name(request) -> str:
    """The name in the request's C{Host} header, without its port: C{127.0.0.1}, C{::1}, C{pi.local}."""
    host = (request.getHeader("host") or "").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name = host.rpartition(":")[0] if host.count(":") == 1 else host
    return name.rstrip(".")


class AllowedHosts:
    """
    The names this server answers to: any IP address, C{localhost}, this
    machine's host name (and C{NAME.local}, its mDNS name), its full name
    once known, and the names given (C{--web-host}).

    The full name takes a DNS lookup, which can take seconds on a Pi
    without DNS: it is made once, in a thread, when the page starts
    (L{learn_full_name}), never on the reactor.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        own = socket.gethostname().lower()  # (the kernel's name: no lookup)
        self.names = {"localhost", own, f"{own}.local", *(n.strip().lower().rstrip(".") for n in names)}

    def learn_full_name(self, reactor) -> None:
        """Add this machine's full name (a reverse lookup), in a thread of C{reactor}'s pool."""
        if IReactorThreads.providedBy(reactor):
            d = deferToThreadPool(reactor, reactor.getThreadPool(), socket.getfqdn)
            d.addCallbacks(lambda name: self.names.add(name.lower().rstrip(".")), lambda _: None)

    def allows(self, request) -> bool:
        """Whether C{request} names this server: one of the names, an address, or no Host at all (HTTP/1.0)."""
        name = host_name(request)
        return not name or name in self.names or ip_of(name) is not None
