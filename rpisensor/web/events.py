"""
Live updates pushed to browsers with Server-Sent Events.

Each reading is one event whose C{id:} is its place in the feed (on C{serve},
the stream's seq), so a browser that reconnects sends C{Last-Event-ID} and
gets every reading after it, from the journal, before the live ones: a
reconnect misses nothing. A comment line every C{heartbeat} seconds keeps
proxies from closing a quiet stream; link and outbox health is an C{event:
health} whenever it changes.

Bounded: at most C{max_clients} browsers at once (more get 503 and retry),
and C{max_clients_per_host} from one address (more get 429), so that pages
that never read cannot take every slot; what one browser has not read is
held up to C{max_buffered} bytes beyond its socket's buffer (the transport
pauses us, as a push producer), and its buffer must drain within
C{max_lag} seconds; past either it is dropped, and resumes with its last id
when it reconnects.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from rpisensor.lograte import RateLimitedLog
from rpisensor.net.peers import ip_of
from rpisensor.web.feed import Event, Feed, Page
from rpisensor.web.query import BadQuery, Query, error_response

#: Events read from the feed per step while a browser catches up.
CATCH_UP = 500
#: Seconds between checks of the health the page shows.
HEALTH_INTERVAL = 2.0

_log = Logger(namespace="rpisensor.web.events")


@dataclass(frozen=True)
class EventLimits:
    """
    @ivar max_clients: browsers following at once (C{--web-max-clients}).
    @ivar max_clients_per_host: browsers following at once from one address
        (C{--web-max-clients-per-host}); a Unix socket's clients (a proxy's)
        count only toward C{max_clients}.
    @ivar max_buffered: bytes held for one browser that does not read, beyond
        its socket's buffer, before it is dropped (C{--web-max-buffer}).
    @ivar max_lag: seconds a browser's socket buffer may stay full (it reads
        nothing sent to it) before it is dropped (C{--web-max-lag}).
    @ivar heartbeat: seconds between comment lines on a quiet stream.
    @ivar retry: milliseconds the browser waits before it reconnects.
    """

    max_clients: int = 100
    max_clients_per_host: int = 10
    max_buffered: int = 256 * 1024
    max_lag: float = 30.0
    heartbeat: float = 15.0
    retry: int = 2000


def encode(event: Event) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event['id']}\nevent: reading\ndata: {data}\n\n".encode()


@implementer(IPushProducer)
class EventClient:
    """One browser's event stream: a catch-up from the feed, then live events."""

    def __init__(self, hub: EventHub, request, after: int, host: str | None = None) -> None:
        self.hub = hub
        self.request = request
        #: The address it counts under for C{max_clients_per_host} (C{None}: not counted).
        self.host = host
        self._stalled = None
        self.sent = after
        #: Where the catch-up reads from next: past gap entries too.
        self.cursor = after
        self.live = False
        self.paused = False
        self.closed = False
        self._queue: deque[bytes] = deque()
        self._queued = 0
        #: Live events that came while catching up, and their size; bounded with the queue
        #: by C{max_buffered}: past it they are let go and the catch-up reads them again.
        self._held: list[Event] = []
        self._held_bytes = 0
        self._read_again = False
        self._reading = False
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(lambda _: self.close())
        channel = getattr(request, "channel", None)
        if channel is not None:
            # The site's idle timeout counts what the client sends, and a page following
            # events sends nothing: its heartbeats tell a dead peer instead.
            channel.setTimeout(None)

    # -- writing --------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.paused:
            self._queue.append(data)
            self._queued += len(data)
            if self._queued > self.hub.limits.max_buffered:
                self.drop()
            return
        self.request.write(data)

    def send(self, events: list[Event], wire: list[bytes] | None = None) -> None:
        """Send the events after the last one sent; C{wire}: their encodings, made once for every page."""
        first = next((i for i, e in enumerate(events) if e["id"] > self.sent), None)
        if first is None:
            return
        self.sent = events[-1]["id"]
        self.hub.sent(len(events) - first)
        self.write(b"".join(wire[first:] if wire is not None else map(encode, events[first:])))

    def drop(self, why: str = "") -> None:
        """A browser that does not read: close it; it reconnects with its last id."""
        why = why or f"{self._queued} bytes were waiting beyond its socket's buffer (--web-max-buffer)"
        self.hub.slow_log.warn(
            "Dropped a web page that does not read what is sent to it: {why}. It reconnects and "
            "resumes from its last reading.",
            key="slow web pages", why=why,
        )  # fmt: skip
        self.close()
        transport = getattr(self.request, "transport", None)
        if transport is not None and hasattr(transport, "abortConnection"):
            transport.abortConnection()

    # -- catching up, then live --------------------------------------------------------

    def catch_up(self) -> None:
        if self.closed or self.paused or self._reading:
            return
        self._reading = True
        self.hub.feed.after(self.cursor, CATCH_UP).addCallbacks(self._caught_up, self._read_failed)

    def _caught_up(self, page: Page) -> None:
        self._reading = False
        if self.closed:
            return
        self.send(page.events)
        self.cursor = max(self.cursor, page.through)
        if page.more or self._read_again:
            self._read_again = False
            self.catch_up()
            return
        self.live = True
        held, self._held, self._held_bytes = self._held, [], 0
        self.send(held)

    def _read_failed(self, failure) -> None:
        self._reading = False
        _log.error("Could not read readings for a web page: {error}", error=failure.getErrorMessage())
        self.close()
        self.request.finish()

    def published(self, events: list[Event], wire: list[bytes]) -> None:
        if self.live:
            self.send(events, wire)
        elif not self.closed:
            size = sum(map(len, wire))
            if self._queued + self._held_bytes + size > self.hub.limits.max_buffered:
                # The feed has them: hold none, and read again before going live.
                self._held, self._held_bytes, self._read_again = [], 0, True
            else:
                self._held.extend(events)
                self._held_bytes += size

    # -- IPushProducer: the transport says when the browser reads ------------------

    def pauseProducing(self) -> None:
        self.paused = True
        if self._stalled is None and not self.closed:
            self._stalled = self.hub.clock.callLater(self.hub.limits.max_lag, self._lagging)

    def _lagging(self) -> None:
        self._stalled = None
        self.drop(f"its socket's buffer stayed full for {self.hub.limits.max_lag:g} s (--web-max-lag)")

    def resumeProducing(self) -> None:
        self.paused = False
        self._stop_stall_timer()
        queue, self._queue, self._queued = self._queue, deque(), 0
        for data in queue:
            self.write(data)
        if not self.live:
            self.catch_up()

    def stopProducing(self) -> None:
        self.close()

    def _stop_stall_timer(self) -> None:
        stalled, self._stalled = self._stalled, None
        if stalled is not None and stalled.active():
            stalled.cancel()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_stall_timer()
        self._queue.clear()
        self._held, self._held_bytes = [], 0
        self.hub.forget(self)


class EventHub:
    """
    Every browser's stream, fed from C{feed}; heartbeats and health for all
    from one timer each.

    @param health: returns the link and outbox health as a JSON-able dict.
    @param on_sent: called with how many reading events went out (metrics).
    """

    def __init__(
        self,
        feed: Feed,
        clock,
        limits: EventLimits = EventLimits(),
        health: Callable[[], dict] | None = None,
        on_sent: Callable[[int], object] | None = None,
    ) -> None:
        self.feed = feed
        self.clock = clock
        self.limits = limits
        self.health = health
        self._on_sent = on_sent
        self.clients: set[EventClient] = set()
        self._per_host: Counter[str] = Counter()
        self.slow_log = RateLimitedLog(clock, _log)
        self._last_health: bytes | None = None
        self._loops: list[LoopingCall] = []

    def start(self) -> None:
        self.feed.add_listener(self._published)
        for interval, beat in ((self.limits.heartbeat, self._heartbeat), (HEALTH_INTERVAL, self._health)):
            loop = LoopingCall(beat)
            loop.clock = self.clock
            loop.start(interval, now=False)
            self._loops.append(loop)

    def stop(self) -> None:
        self.feed.remove_listener(self._published)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        for client in list(self.clients):
            client.close()
            client.request.unregisterProducer()
            client.request.finish()

    def sent(self, count: int) -> None:
        if self._on_sent is not None:
            self._on_sent(count)

    def _published(self, events: list[Event]) -> None:
        if not events or not self.clients:
            return
        wire = [encode(e) for e in events]
        for client in list(self.clients):
            client.published(events, wire)

    def _heartbeat(self) -> None:
        for client in list(self.clients):
            client.write(b": heartbeat\n\n")

    def health_event(self) -> bytes | None:
        if self.health is None:
            return None
        body = {"stream": self.feed.stream, **self.health()}
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return f"event: health\ndata: {data}\n\n".encode()

    def health_changed(self) -> None:
        """Something the health shows changed (a new gap): tell the pages now, not at the next check."""
        self._health()

    def _health(self) -> None:
        event = self.health_event()
        if event is None or event == self._last_health:
            return
        self._last_health = event
        for client in list(self.clients):
            client.write(event)

    def refusal(self, request) -> tuple[int, str] | None:
        """Why C{request} may not follow now, as C{(status, reason)}; C{None} if it may."""
        if len(self.clients) >= self.limits.max_clients:
            return 503, (
                f"{len(self.clients)} pages follow the events already (--web-max-clients); try again later"
            )
        host = _host_of(request)
        if host is not None and self._per_host[host] >= self.limits.max_clients_per_host:
            return 429, (
                f"{self._per_host[host]} pages from {host} follow the events already "
                "(--web-max-clients-per-host); close one, or try again later"
            )
        return None

    def open(self, request, after: int | None) -> EventClient | None:
        """Start streaming to C{request} after id C{after} (C{None}: from now); C{None} if full."""
        if self.refusal(request) is not None:
            return None
        if after is None or after > self.feed.last:
            # A new page, or an id from another stream (a journal made anew): from now.
            after = self.feed.last
        host = _host_of(request)
        client = EventClient(self, request, after, host)
        self.clients.add(client)
        if host is not None:
            self._per_host[host] += 1
        client.write(f"retry: {self.limits.retry}\n: rpisensor events after {after}\n\n".encode())
        health = self.health_event()
        if health is not None:
            self._last_health = health
            client.write(health)
        client.catch_up()
        return client


    def forget(self, client: EventClient) -> None:
        """C{client} has closed: its slots are free."""
        if client not in self.clients:
            return
        self.clients.discard(client)
        if client.host is not None:
            self._per_host[client.host] -= 1
            if not self._per_host[client.host]:
                del self._per_host[client.host]


def _host_of(request) -> str | None:
    """The address C{request} counts under per host: its IP address; C{None} for a Unix socket's client."""
    address = ip_of(getattr(request.getClientAddress(), "host", None))
    return None if address is None else str(address)


class EventsResource(Resource):
    """C{GET /events[?after=ID]}: the event stream; C{Last-Event-ID} wins over C{after}."""

    isLeaf = True

    def __init__(self, hub: EventHub) -> None:
        super().__init__()
        self.hub = hub

    def render_GET(self, request):
        try:
            query = Query(request, allowed=("after",))
            after = query.integer("after", minimum=0)
            header = request.getHeader(b"last-event-id")
            if header:
                after = Query.parse_integer("Last-Event-ID", header, minimum=0)
        except BadQuery as e:
            return error_response(request, 400, str(e))
        refusal = self.hub.refusal(request)
        if refusal is not None:
            request.setHeader(b"retry-after", b"10")
            return error_response(request, *refusal)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # proxies: do not hold the stream back
        self.hub.open(request, after)
        return NOT_DONE_YET
