"""
What the page follows: a numbered sequence of readings (the event id a
browser resumes from), the latest reading of each sensor, and the history of
a time range. Two sources:

  - L{JournalFeed} on C{serve}: the journal is the sequence; an event's id is
    the stream's seq, so a browser resumes from the journal, even across a
    restart of the server.
  - L{ReceivedFeed} on C{collect} and C{poll --subscribe}: readings of many
    devices and streams arrive at once, so the page's ids are its own count
    of the readings received since the role started, kept in a bounded
    buffer; the history of a time range comes from the store (see
    L{rpisensor.web.history}).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from rpisensor.web.history import StoredWindow
from rpisensor.wire import v2

#: One reading as the page and the JSON API show it.
Event = dict

Listener = Callable[[list[Event]], object]


@dataclass(frozen=True)
class Page:
    """
    What L{Feed.after} read: C{events}, the id C{through} which it read (a
    gap entry in the journal has ids and no event), and whether C{more} follow.
    """

    events: list[Event]
    through: int
    more: bool


@dataclass(frozen=True)
class Window:
    """
    What L{Feed.since} read: C{events}, the newest C{limit} taken since the
    window's start, oldest first; C{start}, the time from which they are
    complete (the window's start, or later when the limit left older ones
    out); C{before}, the newest event of each sensor taken before C{start} (the
    state each plot starts in, though it did not change in the window); and
    C{last}, the id of the last event there was when they were read (the page
    follows live from it).
    """

    events: list[Event]
    before: list[Event]
    start: str
    last: int


def newest_of_each(events) -> list[Event]:
    """The newest event (by the time it was taken) of each device's sensor, oldest first."""
    newest: dict[tuple[str, str], Event] = {}
    for event in events:
        key = event["device"], event["sensor"]
        if key not in newest or newest[key]["ts"] < event["ts"]:
            newest[key] = event
    return sorted(newest.values(), key=lambda e: e["ts"])


def event_of(device: str, reading, seq: int) -> Event:
    """A journal or stream reading as the page's event, numbered C{seq}."""
    return {
        "id": seq,
        "device": device,
        "sensor": reading.sensor,
        "value": reading.value,
        "text": reading.text,
        "unit": reading.unit,
        "ts": reading.ts,
    }


def iso_time(seconds: float) -> str:
    """Epoch seconds as the streams write times (ISO 8601 UTC, milliseconds): comparable as text."""
    return v2.format_timestamp(seconds)


def parse_time(text: str) -> float:
    """
    An ISO 8601 time (C{2026-12-01T22:00:00Z}, or with an offset) as epoch seconds.

    @raise ValueError: not such a time.
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


#: Sensors whose latest reading the page shows at most, by default (C{--web-max-tiles}).
MAX_TILES = 1000


class Feed:
    """
    The base of both sources: listeners told of every new batch of events,
    and the latest event of each sensor.

    @ivar last: the id of the newest event the reactor has been told of.
    @ivar latest: the latest event of each (device, sensor), the most recently
        updated last; at most C{max_tiles} of them (on C{collect} a reporter
        names its devices and sensors: the oldest updated are let go).
    """

    _log = Logger()

    def __init__(self, max_tiles: int = MAX_TILES) -> None:
        self._listeners: list[Listener] = []
        self.latest: dict[tuple[str, str], Event] = {}
        self.max_tiles = max_tiles
        self.last = 0

    def _keep_latest(self, event: Event) -> None:
        """C{event} is the latest of its sensor: it moves to the end, and the oldest beyond C{max_tiles} go."""
        latest = self.latest
        key = event["device"], event["sensor"]
        latest.pop(key, None)
        latest[key] = event
        while len(latest) > self.max_tiles:
            del latest[next(iter(latest))]

    @property
    def stream(self) -> str:
        """
        What the ids count in: a page that sees another (a journal made anew, a
        receiving role restarted) loads again instead of resuming.
        """
        raise NotImplementedError

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._keep_latest(event)
        if events:
            self.last = max(self.last, events[-1]["id"])
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:
                self._log.failure("A listener of the web feed failed")

    def after(self, seq: int, limit: int) -> Deferred[Page]:
        """Fires with a L{Page}: the events after id C{seq}, in order, from at most C{limit} entries."""
        raise NotImplementedError

    def since(self, start: float, limit: int) -> Deferred[Window]:
        """Fires with the L{Window} of events taken at or after C{start} (epoch seconds)."""
        raise NotImplementedError

    def current(self) -> Deferred[tuple[list[Event], int]]:
        """Fires with C{(latest event of each sensor, last id)}."""
        return succeed((sorted(self.latest.values(), key=lambda e: e["id"]), self.last))


class JournalFeed(Feed):
    """
    C{serve}'s journal as the page's feed: committed entries are published
    as they are committed (a gap entry advances the ids without an event).

    @param journal: the L{rpisensor.stream.journal_service.JournalService}.
    """

    def __init__(self, journal, device: str, max_tiles: int = MAX_TILES) -> None:
        super().__init__(max_tiles)
        self.journal = journal
        self.device = device

    @property
    def stream(self) -> str:
        return self.journal.journal.stream

    def start(self) -> Deferred:
        """Learn the latest reading of each sensor, then follow the journal's commits."""
        self.journal.add_listener(self._committed)
        return self.journal.snapshot().addCallback(self._snapshot)

    def stop(self) -> None:
        self.journal.remove_listener(self._committed)

    def _snapshot(self, snapshot) -> None:
        last, latest = snapshot
        for reading in latest.values():
            event = event_of(self.device, reading, reading.seq)
            known = self.latest.get((event["device"], event["sensor"]))
            if known is None or known["id"] < event["id"]:
                self._keep_latest(event)
        self.last = max(self.last, last)

    def _committed(self, entries) -> None:
        if entries:
            self.last = max(self.last, max(e.last for e in entries))
        self._publish(self._events(entries))

    def after(self, seq: int, limit: int) -> Deferred[Page]:
        def page(entries) -> Page:
            through = max([seq, *(e.last for e in entries)])
            return Page(self._events(entries), through, len(entries) >= limit)

        return self.journal.after(seq, limit).addCallback(page)

    def _events(self, entries) -> list[Event]:
        return [event_of(self.device, e, e.seq) for e in entries if isinstance(e, v2.Reading)]

    def since(self, start: float, limit: int) -> Deferred[Window]:
        begin = iso_time(start)

        def read_before(result) -> Deferred[Window]:
            readings, last = result
            events = self._events(readings)
            complete = events[0]["ts"] if len(readings) >= limit else begin
            d = self.journal.latest_per_sensor(before=complete)
            return d.addCallback(lambda before: Window(events, self._events(before.values()), complete, last))

        return self.journal.readings_since(begin, limit).addCallback(read_before)


class ReceivedFeed(Feed):
    """
    The readings a receiving role stores (C{collect}, C{poll --subscribe}),
    numbered in the order they were stored, the newest C{keep} of them held
    for browsers that reconnect.

    @param history: reads a time range from the store,
        C{history(start_iso, limit) -> Deferred[StoredWindow]}, or C{None}
        (no store: the buffer is all there is).
    """

    def __init__(self, keep: int = 10_000, history=None, max_tiles: int = MAX_TILES) -> None:
        super().__init__(max_tiles)
        self._buffer: deque[Event] = deque(maxlen=keep)
        self._history = history
        self._stream = secrets.token_hex(8)  # the ids start again at every start

    @property
    def stream(self) -> str:
        return self._stream

    def on_reading(self, reading) -> None:
        """A L{rpisensor.entries.Reading} was stored (the roles' C{on_reading})."""
        event = event_of(reading.device, reading, self.last + 1)
        self._buffer.append(event)
        self._publish([event])

    def after(self, seq: int, limit: int) -> Deferred[Page]:
        if not self._buffer or seq >= self._buffer[-1]["id"]:
            return succeed(Page([], seq, False))
        first = self._buffer[0]["id"]
        start = max(0, seq + 1 - first)
        events = [self._buffer[i] for i in range(start, min(len(self._buffer), start + limit))]
        return succeed(Page(events, events[-1]["id"], start + limit < len(self._buffer)))

    def since(self, start: float, limit: int) -> Deferred[Window]:
        last = self.last
        begin = iso_time(start)
        if self._history is None:
            return succeed(self._window(None, begin, limit, last))
        return self._history(begin, limit).addCallback(self._window, begin, limit, last)

    def _window(self, stored: StoredWindow | None, begin: str, limit: int, last: int) -> Window:
        """
        The store's readings (which have no page id: id 0) before those in
        the buffer, which the store holds too: one of each reading. The state
        before the window: the newest of the store's, the buffer's and the
        latest of each sensor.
        """
        buffered = [e for e in self._buffer if e["ts"] >= begin]
        older: list[Event] = []
        # Those of the buffer first: where the store has the same reading, it has no page id.
        before: list[Event] = [*self.latest.values(), *self._buffer]
        start = begin
        if stored is not None:
            seen = {(e["device"], e["sensor"], e["ts"]) for e in buffered}
            older = [event_of(r.device, r, 0) for r in stored.readings if (r.device, r.sensor, r.ts) not in seen]
            before += [event_of(r.device, r, 0) for r in stored.before]
            start = stored.start
        events = older + buffered
        if len(events) > limit:
            cut, events = events[:-limit], events[-limit:]
            start = max(start, min(e["ts"] for e in events))
            before += cut
        return Window(events, newest_of_each(e for e in before if e["ts"] < start), start, last)
