"""
What a receiving role (C{collect}, C{poll --subscribe}) does with each v2
entry before it may be acknowledged: store it durably, then hand the reading
to the program embedding the role, if any; the entry's Deferred fires once
both are done, in the order the entries came. A gap, once stored, is told
to C{on_gap} (the web page's health), which is not waited for. Where the
entries are also published (C{collect --publish-mqtt}), each batch is
published first, and stored once the broker has it.
"""

from __future__ import annotations

from collections import deque
import time
from collections.abc import Callable

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.store import StoreService
from rpisensor.entries import Gap, Reading, Entry
from rpisensor.wire.v2 import format_timestamp

#: What an embedding program gives to be called with each reading; a Deferred
#: it returns is waited for before the reading is acknowledged.
OnReading = Callable[[Reading], object]
#: Told of each gap once it is stored.
OnGap = Callable[[Gap], object]

_PENDING = object()


class Delivery:
    """
    C{delivery(record) -> Deferred}, the C{store} of a
    L{rpisensor.stream.receiver.StreamReceiver}.

    @param store: where records go; C{None}: nowhere (the role only logs).
    @param on_reading: called with each reading once it is stored, one at a
        time and in order; if it raises or its Deferred fails, the reading is
        not acknowledged (the connection closes and the sender sends it again).
    @param on_gap: called with each gap once it is stored; what it raises is logged.
    @ivar publish: C{publish(records) -> Deferred}, firing once they are
        published (L{rpisensor.mqtt.bridge.Bridge.publish}), in the order
        given; L{many} stores a batch only then. C{None}: not published.
    """

    _log = Logger()

    def __init__(
        self,
        store: StoreService | None,
        on_reading: OnReading | None = None,
        on_gap: OnGap | None = None,
    ) -> None:
        self.store = store
        self.on_reading = on_reading
        self.on_gap = on_gap
        self.publish: Callable[[list[Entry]], Deferred] | None = None
        # Entries stored and waiting for on_reading: [record, done, stored result].
        self._queue: deque[list] = deque()
        self._calling = False

    def __call__(self, record: Entry) -> Deferred:
        stored = self.store.append(record) if self.store is not None else succeed(None)
        if self.on_gap is not None and record.__class__ is Gap:
            stored.addCallback(self._tell_gaps, [record])
        if self.on_reading is None:
            return stored
        return self._then_hand_over(record, stored)

    def many(self, records: list[Entry]) -> Deferred:
        """
        C{records} (in order) as one batch: the result fires once all are
        (published,) stored and handed over, or fails with the first failure.
        Without an C{on_reading}, they go to the store as one list (one Deferred).
        """
        if self.publish is not None:
            return self.publish(records).addCallback(lambda _: self._store_many(records))
        return self._store_many(records)

    def _store_many(self, records: list[Entry]) -> Deferred:
        if self.on_reading is None:
            stored = self.store.append_many(records) if self.store is not None else succeed(None)
            if self.on_gap is not None:
                gaps = [r for r in records if r.__class__ is Gap]
                if gaps:
                    stored.addCallback(self._tell_gaps, gaps)
            return stored
        if len(records) == 1:
            return self(records[0])
        # Each reading is still handed over on its own, in order, once stored.
        return gatherResults([self(record) for record in records], consumeErrors=True).addCallbacks(
            lambda _: None, lambda failure: failure.value.subFailure
        )

    def _tell_gaps(self, result, gaps: list[Gap]):
        for gap in gaps:
            try:
                self.on_gap(gap)
            except Exception:
                self._log.failure("The on_gap callback failed for a stored gap")
        return result

    def _then_hand_over(self, record: Entry, stored: Deferred) -> Deferred:
        done: Deferred = Deferred()
        entry = [record, done, _PENDING]
        self._queue.append(entry)
        stored.addBoth(self._stored, entry)
        return done

    def _stored(self, result, entry: list) -> None:
        entry[2] = result
        self._next()

    def _next(self) -> None:
        # One call at a time, oldest first: a reading is acknowledged only once
        # every one before it was handed over too.
        while self._queue and not self._calling and self._queue[0][2] is not _PENDING:
            record, done, result = self._queue.popleft()
            if isinstance(result, Failure):
                done.errback(result)
                continue
            if not isinstance(record, Reading):  # a gap: nothing to hand over
                done.callback(None)
                continue
            self._calling = True
            maybeDeferred(self.on_reading, record).addBoth(self._called, done)

    def _called(self, result, done: Deferred) -> None:
        self._calling = False
        if isinstance(result, Failure):
            done.errback(result)
        else:
            done.callback(None)
        self._next()


class Stamp:
    """
    C{stamp() -> str}: when a record was received, as the store keeps it
    (ISO 8601 UTC with milliseconds, from the C{wall} clock); the same text for
    every record of one millisecond, so a replay of thousands formats it once
    per millisecond.
    """

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._ms: int | None = None
        self._text = ""

    def __call__(self) -> str:
        seconds = self._wall()
        ms = int(seconds * 1000)
        if ms != self._ms:
            self._ms, self._text = ms, format_timestamp(seconds)
        return self._text
