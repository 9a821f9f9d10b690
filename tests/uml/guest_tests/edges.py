"""
Edge events from a line request, as a guest test reads them: in the reactor (an
C{IReadDescriptor} on the request's file descriptor, as the gpiod backend will), or blocking
with a deadline. Both wait for conditions, never for a time.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

#: A generous deadline for loaded machines, not a measurement.
DEADLINE = 10.0

Events = list
Condition = Callable[[Events], bool]


@implementer(IReadDescriptor)
class EdgeReader:
    """Keeps every edge event the reactor reads from C{request.fd}; fires waiters on conditions."""

    def __init__(self, request, reactor):
        self._request = request
        self._reactor = reactor
        self._waiters: list[tuple[Condition, Deferred]] = []
        self.events: Events = []

    def fileno(self) -> int:
        return self._request.fd

    def logPrefix(self) -> str:
        return "EdgeReader"

    def doRead(self):
        self.events.extend(self._request.read_edge_events())
        for waiter in list(self._waiters):
            condition, waiting = waiter
            if condition(self.events):
                self._waiters.remove(waiter)
                waiting.callback(list(self.events))

    def connectionLost(self, reason):
        pass

    def start(self) -> None:
        self._reactor.addReader(self)

    def stop(self) -> None:
        self._reactor.removeReader(self)

    def wait_for(self, condition: Condition, timeout: float = DEADLINE) -> Deferred:
        """Fires with the events so far once C{condition(events)} holds; fails after C{timeout}."""
        if condition(self.events):
            return succeed(list(self.events))
        waiting: Deferred = Deferred()
        waiter = (condition, waiting)
        self._waiters.append(waiter)

        def gave_up(failure, _timeout):
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise AssertionError(f"gave up after {timeout} s waiting for edges; got {describe(self.events)}")

        return waiting.addTimeout(timeout, self._reactor, onTimeoutCancel=gave_up)

    def wait_count(self, count: int, timeout: float = DEADLINE) -> Deferred:
        return self.wait_for(lambda events: len(events) >= count, timeout)


def read_until(request, condition: Condition, timeout: float = DEADLINE) -> Events:
    """Read edge events, blocking, until C{condition(events)} holds; fail after C{timeout}."""
    events: Events = []
    deadline = time.monotonic() + timeout
    while not condition(events):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"gave up after {timeout} s waiting for edges; got {describe(events)}")
        if request.wait_edge_events(timedelta(seconds=left)):
            events.extend(request.read_edge_events())
    return events


def kinds(events: Events) -> str:
    """C{"RF..."}: each event's type, rising or falling."""
    return "".join(event.event_type.name[0] for event in events)


def describe(events: Events) -> str:
    return ", ".join(
        f"{event.event_type.name} line {event.line_offset} seq {event.line_seqno}/{event.global_seqno}"
        for event in events
    ) or "none"
