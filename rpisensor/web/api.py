"""
The JSON API beside the page:

  - C{GET /api/state}: the latest reading of each sensor (the tiles), what
    the role declares of them (C{serve}), the last event id, link and outbox
    health, and what this client may change.
  - C{GET /api/readings?after=ID[&limit=N]}: the readings after an event id;
    C{?since=ISO_TIME} or C{?window=SECONDS}: those taken since then (the
    plots' history), from when they are complete, and the newest reading of
    each sensor before that (the state each plot starts in); C{limit} (at
    most L{MAX_LIMIT}) keeps the newest.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from rpisensor.web.controls import Controls
from rpisensor.web.feed import Event, Feed, iso_time
from rpisensor.web.history import HistoryBusy
from rpisensor.web.query import BadQuery, Query, error_response, json_response

#: Readings one answer holds at most, and by default.
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 5_000
#: The longest window of history, in seconds: 31 days.
MAX_WINDOW = 31 * 24 * 3600.0
DEFAULT_WINDOW = 3600.0


def kind_of(event: Event) -> str:
    """
    How the page draws a sensor: a digital input (no unit, 0 or 1) as steps, a measurement
    as a line. (Streams do not say which a sensor is; a digital input's value is always an
    integer 0 or 1 and it has no unit.)
    """
    value = event.get("value")
    digital = event.get("unit") is None and isinstance(value, int) and value in (0, 1)
    return "digital" if digital else "measurement"


class _JSONResource(Resource):
    """A resource whose answer comes later (read in the journal's or the store's thread)."""

    isLeaf = True

    def _answer(self, request, d) -> object:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))  # the client left first

        def done(body):
            if not gone:
                request.write(json_response(request, body))
                request.finish()

        def failed(failure):
            if gone:
                return
            if failure.check(HistoryBusy):
                request.setHeader(b"retry-after", b"5")
                request.write(error_response(request, 503, failure.getErrorMessage()))
            else:
                request.write(error_response(request, 500, f"could not read: {failure.getErrorMessage()}"))
            request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET


class StateResource(_JSONResource):
    """C{GET /api/state}."""

    def __init__(self, info: dict, feed: Feed, wall: Callable[[], float], controls: Controls, health: Callable[[], dict],
                 stale_after: float) -> None:  # fmt: skip
        super().__init__()
        self.info = info
        self.feed = feed
        self.wall = wall
        self.controls = controls
        self.health = health
        self.stale_after = stale_after

    def render_GET(self, request):
        try:
            Query(request, allowed=())
        except BadQuery as e:
            return error_response(request, 400, str(e))
        return self._answer(request, self.feed.current().addCallback(self._body, request))

    def _body(self, current, request) -> dict:
        latest, last = current
        # A role that knows its sensors (serve) says what each is; otherwise the readings tell.
        declared = {s["sensor"]: s for s in self.info.get("sensors", ())}
        tiles = []
        for event in latest:
            known = declared.get(event["sensor"]) if event["device"] == self.info.get("device") else None
            kind = known["kind"] if known else kind_of(event)
            stale_after = known.get("stale_after", self.stale_after) if known else self.stale_after
            tiles.append({**event, "kind": kind, "stale_after": stale_after if kind == "measurement" else None})
        return {
            **self.info,
            "stale_after": self.stale_after,
            "now": iso_time(self.wall()),
            "stream": self.feed.stream,
            "last": last,
            "tiles": tiles,
            "health": self.health(),
            "controls": self.controls.describe(request),
        }


class ReadingsResource(_JSONResource):
    """C{GET /api/readings}."""

    def __init__(self, feed: Feed, wall: Callable[[], float]) -> None:
        super().__init__()
        self.feed = feed
        self.wall = wall

    def render_GET(self, request):
        try:
            query = Query(request, allowed=("after", "since", "window", "limit"))
            limit = query.integer("limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
            after = query.integer("after", minimum=0)
            since = query.time("since")
            window = query.seconds("window", MAX_WINDOW)
            if after is not None and (since is not None or window is not None):
                raise BadQuery("give either after (an event id) or since/window (a time), not both")
            if since is not None and window is not None:
                raise BadQuery("give either since (a time) or window (seconds back from now), not both")
        except BadQuery as e:
            return error_response(request, 400, str(e))
        if after is not None:
            last = self.feed.last
            d = self.feed.after(after, limit).addCallback(lambda page: {"readings": page.events, "last": last})
            return self._answer(request, d)
        if since is None:
            since = self.wall() - (window if window is not None else DEFAULT_WINDOW)
        d = self.feed.since(since, limit)
        return self._answer(request, d.addCallback(lambda window: {
            "readings": window.events, "before": window.before, "from": window.start, "last": window.last,
        }))  # fmt: skip
