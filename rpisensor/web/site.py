"""
The web side of a role: the page and its assets, the JSON API, the event
stream and C{/metrics}, served by a L{WebSite} that applies the role's
access policy and refuses oversized requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from importlib.resources import files

from twisted.logger import Logger
from twisted.internet.protocol import Protocol
from twisted.web import http, server
from twisted.web.pages import notFound
from twisted.web.resource import Resource

from rpisensor.lograte import RateLimitedLog
from rpisensor.net.access import AccessPolicy
from rpisensor.net.admission import counted_host
from rpisensor.net.limits import ServerLimits
from rpisensor.net.peers import peer_text
from rpisensor.web.api import ReadingsResource, StateResource
from rpisensor.web.controls import Controls, OutputsResource, SimulateResource
from rpisensor.web.events import EventHub, EventsResource
from rpisensor.web.feed import Feed
from rpisensor.web.hosts import AllowedHosts, host_name
from rpisensor.web.metrics import Metrics, MetricsResource
from rpisensor.web.query import error_response

#: The largest request body accepted, in bytes: a change is a short POST.
MAX_BODY = 4096

#: The page's files, shipped in the package (no CDN: a classroom often has no Internet).
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    # The plots' library, uPlot (MIT: its licence is served beside it).
    "uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uplot/uPlot.min.css": "text/css; charset=utf-8",
    "uplot/LICENSE": "text/plain; charset=utf-8",
}

_log = Logger(namespace="rpisensor.web.site")


def _asset(name: str) -> bytes:
    return files("rpisensor.web").joinpath("static", *name.split("/")).read_bytes()


class _File(Resource):
    """One of the page's files, from memory."""

    isLeaf = True

    def __init__(self, data: bytes, kind: str) -> None:
        super().__init__()
        self.data = data
        self.kind = kind.encode()

    def render_GET(self, request):
        request.setHeader(b"content-type", self.kind)
        request.setHeader(b"cache-control", b"no-cache")
        return self.data


class _Node(Resource):
    """A directory of fixed children: any other name is a 404 saying where to look."""

    def getChild(self, path, request):
        return notFound("No such page", "The page is /, the API /api/state and /api/readings.")


class _NoSuchAPI(Resource):
    """Any path under C{/api/} that is not one: a JSON 404, as every API answer is JSON."""

    isLeaf = True

    def render(self, request):
        path = request.uri.split(b"?", 1)[0].decode("utf-8", "replace")[:200]
        return error_response(
            request, 404, f"no such API: {path}; the API is /api/state, /api/readings, /api/sim/NAME and "
            "/api/outputs/NAME"
        )  # fmt: skip


class _API(Resource):
    """C{/api/}: its resources; any other name is L{_NoSuchAPI}."""

    def getChild(self, path, request):
        return _NoSuchAPI()

    def render(self, request):
        return _NoSuchAPI().render(request)


class _Refused(Resource):
    """A JSON error with its status, for any method."""

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request):
        return error_response(request, self.code, self.message)


class _Root(_Node):
    """
    The root: every request passes here first. It must name this server in
    its C{Host} (L{AllowedHosts}), and no answer may be shown in another
    site's frame (the switches would be a click away: clickjacking).
    """

    def __init__(self, hosts: AllowedHosts, refusals: RateLimitedLog) -> None:
        super().__init__()
        self.hosts = hosts
        self._refusals = refusals

    def getChildWithDefault(self, path, request):
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"content-security-policy", b"frame-ancestors 'none'")
        if not self.hosts.allows(request):
            name = host_name(request)[:80]
            self._refusals.warn(
                "Refused a web request for {name!r}: not a name of this server (a page of another site "
                "whose name leads here: DNS rebinding?). If it is yours, add --web-host {name}.",
                key="web requests for other names", name=name,
            )  # fmt: skip
            return _Refused(
                403, f"this server is not {name!r}: open it by its address or its own name, or add --web-host {name}"
            )
        return super().getChildWithDefault(path, request)


class LimitedRequest(server.Request):
    """A request whose body may be at most L{MAX_BODY} bytes; a longer one is refused with 413."""

    max_body = MAX_BODY
    _refused = False
    _body = 0

    def gotLength(self, length):
        super().gotLength(length)
        if length is not None and length > self.max_body:
            self._refuse()

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._body += len(data)
        if self._body > self.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self._refused:
            super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        message = f"request body larger than {self.max_body} bytes\n".encode()
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message)
        )
        transport.loseConnection()


class _Forbidden(Protocol):
    """Answers a peer the access policy refuses with one 403, then closes."""

    def connectionMade(self):
        message = b"this address may not connect (see --allow)\n"
        transport = self.transport
        transport.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(message), message)
        )
        transport.loseConnection()


class WebChannel(http.HTTPChannel):
    """
    One HTTP connection, whose every request must arrive whole, headers and
    body, within the site's C{message_timeout} of its first byte; else it is
    answered C{408} and closed. (Twisted's idle timeout restarts with every
    byte: a peer sending one header byte every few seconds would hold its
    slot for ever, as nginx's C{client_header_timeout} prevents.)
    """

    _deadline = None

    def dataReceived(self, data):
        if data and self._deadline is None and not self._handlingRequest:
            self._deadline = self.callLater(self.site.limits.message_timeout, self._too_slow)
        super().dataReceived(data)

    def allContentReceived(self):
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason):
        self._stop_deadline()
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _too_slow(self) -> None:
        self._deadline = None
        seconds = self.site.limits.message_timeout
        self.site.refusals.warn(
            "Closed a web connection from {peer}: its request had not arrived whole {seconds:g} s after "
            "it began (--message-timeout).",
            key="slow web requests", peer=peer_text(self.transport), seconds=seconds,
        )  # fmt: skip
        message = f"the request did not arrive whole within {seconds:g} s\n".encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message)
        )
        self.transport.loseConnection()


class WebSite(server.Site):
    """
    The role's site. Peers outside the access policy get a 403; beyond
    C{max_connections} open at once, or C{max_connections_per_host} from one
    address (loopback and Unix sockets not counted, as on the role's
    listeners), a new one is closed; a request must arrive whole within
    C{message_timeout} (L{WebChannel}).
    """

    requestFactory = LimitedRequest
    protocol = WebChannel
    noisy = False

    def __init__(self, root, clock, policy: AccessPolicy, limits: ServerLimits = ServerLimits()) -> None:
        super().__init__(root, timeout=limits.idle_timeout or 60.0, reactor=clock)
        self.policy = policy
        self.limits = limits
        self.open = 0
        self._per_host: Counter[str] = Counter()
        self.refusals = RateLimitedLog(clock, _log, burst=5, window=10.0)

    def logPrefix(self) -> str:
        return "rpisensor web"

    def log(self, request) -> None:
        """No line per request: a page makes many, and any peer could fill the log."""

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if host is not None and not self.policy.allows(host):
            self.refusals.warn(
                "Refused a web connection from {host}: it is not in the allowed networks ({allowed}). "
                "Add --allow with its network to let it in.",
                key="refused web connections", host=host, allowed=self.policy.describe(),
            )  # fmt: skip
            return _Forbidden()
        if self.open >= self.limits.max_connections:
            self.refusals.warn(
                "Refused a web connection from {host}: {count} are open, the limit (--max-connections).",
                key="busy web connections", host=host or "a local client", count=self.open,
            )  # fmt: skip
            return None
        counted = counted_host(host)
        if counted is not None and self._per_host[counted] >= self.limits.max_connections_per_host:
            self.refusals.warn(
                "Refused a web connection from {host}: {count} from that address are open, the limit "
                "(--max-connections-per-host).",
                key="busy web connections", host=host, count=self._per_host[counted],
            )  # fmt: skip
            return None
        channel = super().buildProtocol(addr)
        self.open += 1
        if counted is not None:
            self._per_host[counted] += 1
        lost = channel.connectionLost

        def connection_lost(reason):
            self.open -= 1
            if counted is not None:
                self._per_host[counted] -= 1
                if not self._per_host[counted]:
                    del self._per_host[counted]
            return lost(reason)

        channel.connectionLost = connection_lost
        return channel


def build_root(
    info: dict,
    feed: Feed,
    wall: Callable[[], float],
    hub: EventHub,
    metrics: Metrics,
    controls: Controls,
    health: Callable[[], dict],
    stale_after: float,
    hosts: AllowedHosts | None = None,
) -> Resource:
    """
    The resource tree: C{/}, C{/static/...}, C{/api/...}, C{/events}, C{/metrics}, each for
    requests that name one of C{hosts} (by default this machine's names and addresses).
    """
    root = _Root(hosts if hosts is not None else AllowedHosts(), RateLimitedLog(hub.clock, _log))
    root.putChild(b"", _File(_asset("index.html"), "text/html; charset=utf-8"))
    static = _Node()
    for name, kind in ASSETS.items():
        *folders, leaf = name.split("/")
        directory = static
        for folder in map(str.encode, folders):
            if folder not in directory.children:
                directory.putChild(folder, _Node())
            directory = directory.children[folder]
        directory.putChild(leaf.encode(), _File(_asset(name), kind))
    root.putChild(b"static", static)
    # Browsers ask for /favicon.ico whatever the page says; it is served from the package too.
    root.putChild(b"favicon.ico", _File(_asset("favicon.ico"), "image/x-icon"))
    api = _API()
    api.putChild(b"state", StateResource(info, feed, wall, controls, health, stale_after))
    api.putChild(b"readings", ReadingsResource(feed, wall))
    api.putChild(b"sim", SimulateResource(controls))
    api.putChild(b"outputs", OutputsResource(controls))
    root.putChild(b"api", api)
    root.putChild(b"events", EventsResource(hub))
    root.putChild(b"metrics", MetricsResource(metrics))
    return root
