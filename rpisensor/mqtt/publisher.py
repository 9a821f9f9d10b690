"""
The outbox on MQTT.

L{StreamPublisher} publishes every entry of the outbox, in order, with QoS 1
on the stream topic, and lets the outbox go of an entry only once it is
delivered, and everything before it. At most the broker's receive maximum
are unacknowledged by the broker; what waits stays in the outbox on disk,
which is the only queue: entries are read from it a batch at a time, or
taken as they are committed when the stream is live.

What "delivered" means is the mode's:

  - By default, the broker's PUBACK. After a reconnect (and after a restart)
    publishing starts again after the last entry delivered: an entry whose
    PUBACK was lost with the link is published again, so a consumer
    deduplicates on C{(device, stream, seq)}, as QoS 1 means at least once.
  - End to end (L{EndToEnd}, C{--ack end-to-end}): a collector's ack on the
    Pi's ack topic, which it publishes once the database transaction that
    holds the entry committed (L{confirm}). A PUBACK then only frees the
    broker's slot. At most C{window} entries are published and not yet
    confirmed; one that stays unconfirmed for the timeout (a collector killed
    before its commit, a broker restarted without persistence, an ack lost)
    is published again, the wait doubling each time up to L{MAX_BACKOFF}
    times the timeout. Acks come in any order (collectors sharing a
    subscription each ack their own share); the outbox lets go of the entries
    confirmed without a hole before them.

C{on_delivered} (by default the outbox's C{acknowledge}) is told the seq
through which everything is delivered, each time it grows.

L{StatePublisher} keeps each entity's latest state retained on its state
topic, as the readings are committed, and all of them again at each connect.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rpisensor.entries import Entry, Reading
from rpisensor.lograte import RateLimitedLog
from rpisensor.mqtt.client import PahoConnection, packet_size
from rpisensor.mqtt.messages import binary_state, measurement_state, stream_message
from rpisensor.mqtt.outgoing import Outgoing
from rpisensor.stream.journal_service import JournalService

#: Entries read from the outbox at a time while catching up (at least the window); the next
#: read starts when half of them are left, so at most one and a half of these are in memory.
FETCH = 500
#: End to end: an entry published again waits up to this many times the timeout for its ack.
MAX_BACKOFF = 8


@dataclass(frozen=True)
class EndToEnd:
    """
    Entries are delivered when a collector confirms them (C{--ack end-to-end}).

    @ivar clock: schedules the checks for entries left unconfirmed (monotonic).
    @ivar timeout: seconds an entry waits for its confirmation before it is
        published again (then twice that, and so on, up to L{MAX_BACKOFF} times).
    @ivar window: entries published and not yet confirmed, at most.
    """

    clock: object
    timeout: float = 10.0
    window: int = 5000


class _Unconfirmed:
    """End to end: one entry published and not yet confirmed."""

    __slots__ = ("last", "payload", "mid", "sent", "tries", "queued")

    def __init__(self, last: int, payload: bytes, mid: int, sent: float) -> None:
        self.last = last
        self.payload = payload
        #: The publication the broker has not acknowledged yet, if any.
        self.mid: int | None = mid
        self.sent = sent
        self.tries = 0
        #: Waiting for a slot to be published again.
        self.queued = False


class StreamPublisher:
    """
    The outbox's entries on C{topic}, from the last one delivered on.

    @param on_delivered: told the seq through which everything is
        delivered, each time it grows.
    @param on_refused: told the broker's reason when it refuses an entry
        (its PUBACK carries an error): the entry stays in the outbox, and the
        caller ends the connection to try again later.
    @param end_to_end: deliver on collectors' confirmations (L{confirm})
        instead of the broker's PUBACK.
    """

    _log = Logger(namespace="rpisensor.mqtt")

    def __init__(
        self,
        outbox: JournalService,
        device: str,
        topic: str,
        on_delivered: Callable[[int], object] | None = None,
        on_refused: Callable[[str], object] | None = None,
        end_to_end: EndToEnd | None = None,
    ) -> None:
        self._outbox = outbox
        self._device = device
        self._topic = topic
        self._on_delivered = on_delivered if on_delivered is not None else outbox.acknowledge
        self._on_refused = on_refused
        self._end_to_end = end_to_end
        #: Every entry up to this one is delivered.
        self.delivered = outbox.acked
        #: How many entries were published, over every connection (repeats included).
        self.published = 0
        #: End to end: how many were published again for want of a confirmation.
        self.republished = 0
        self._connection: PahoConnection | None = None
        #: Publications the broker may hold unacknowledged at once.
        self.slots = 1
        self._max_packet: int | None = None
        self.next = self.delivered + 1
        #: By the broker's PUBACK: published and unacknowledged, in order: [mid, last seq, acknowledged].
        self._in_flight: deque[list] = deque()
        #: Publications the broker has not acknowledged: by mid, the record above, or end to end the entry's seq.
        self._by_mid: dict[int, object] = {}
        #: End to end: published and not yet confirmed, by first seq, in order; and those to publish again.
        self._unconfirmed: dict[int, _Unconfirmed] = {}
        self._again: deque[int] = deque()
        self._checks: LoopingCall | None = None
        self._republish_log: RateLimitedLog | None = None
        #: Entries at hand, by their first seq, contiguous from next to fetched_to, with their
        #: messages where they were made already (read from the outbox, in its thread).
        self._cache: dict[int, tuple[Entry, bytes | None]] = {}
        self._fetched_to = self.delivered
        self._fetching = False
        self._generation = 0
        self._stalled_on: int | None = None
        outbox.add_listener(self._committed)
        if end_to_end is not None:
            self._republish_log = RateLimitedLog(end_to_end.clock, self._log)
            self._checks = LoopingCall(self._check_unconfirmed)
            self._checks.clock = end_to_end.clock
            self._checks.start(max(0.05, min(1.0, end_to_end.timeout / 4)), now=False)

    @property
    def batch(self) -> int:
        return max(self.slots, FETCH)

    @property
    def waiting(self) -> int:
        """Entries of the outbox not yet delivered."""
        return max(0, self._outbox.journal.last - self.delivered)

    @property
    def unconfirmed(self) -> int:
        """End to end: entries published and not yet confirmed by a collector."""
        return len(self._unconfirmed)

    def attach(self, connection: PahoConnection, slots: int, max_packet: int | None) -> None:
        """
        A connection is up: publish from the last delivered entry on (end to
        end: first again every entry not yet confirmed, then on from where
        publishing was).
        """
        self._generation += 1
        self._connection = connection
        self.slots = max(1, slots)
        self._max_packet = max_packet
        self.delivered = max(self.delivered, self._outbox.acked)
        self._in_flight.clear()
        self._by_mid.clear()
        self._cache.clear()
        self._fetching = False
        self._stalled_on = None
        if self._end_to_end is None:
            self.next = self.delivered + 1
        else:
            self.next = max(self.next, self.delivered + 1)
            self._again.clear()
            for key, record in self._unconfirmed.items():
                record.mid, record.queued = None, True
                self._again.append(key)
        self._fetched_to = self.next - 1
        self.pump()

    def detach(self) -> None:
        """The connection is gone: what was not delivered goes again on the next one."""
        self._generation += 1
        self._connection = None
        self._in_flight.clear()
        self._by_mid.clear()
        self._cache.clear()
        self._fetching = False

    def stop(self) -> None:
        self.detach()
        self._outbox.remove_listener(self._committed)
        if self._checks is not None and self._checks.running:
            self._checks.stop()

    # -- publishing -------------------------------------------------------------------------

    def _committed(self, entries: list[Entry]) -> None:
        if self._connection is None:
            return
        for entry in entries:
            first, last = entry.first, entry.last
            if first == self._fetched_to + 1 and len(self._cache) < self.batch + self.batch // 2:
                self._cache[first] = (entry, None)
                self._fetched_to = last
        self.pump()

    def pump(self) -> None:
        """Publish what the window and the entries at hand allow; read more from the outbox meanwhile."""
        connection = self._connection
        confirming = self._end_to_end is not None
        while connection is not None and len(self._by_mid) < self.slots:
            if self._again:
                if not self._publish_again(connection, self._again.popleft()):
                    return
                continue
            if confirming and len(self._unconfirmed) >= self._end_to_end.window:
                break
            at_hand = self._cache.get(self.next)
            if at_hand is None:
                break
            entry, payload = at_hand
            if payload is None:
                payload = stream_message(self._device, entry)
            if self._max_packet is not None and packet_size(self._topic, payload) > self._max_packet:
                self._stall(entry.first, len(payload))
                return
            mid = connection.publish(self._topic, payload)
            if mid is None:
                return  # the link is going
            key = self.next
            del self._cache[key]
            last = entry.last
            if confirming:
                self._unconfirmed[key] = _Unconfirmed(last, payload, mid, self._end_to_end.clock.seconds())
                self._by_mid[mid] = key
            else:
                record = [mid, last, False]
                self._in_flight.append(record)
                self._by_mid[mid] = record
            self.published += 1
            self.next = last + 1
            if last > entry.first:  # a gap: readings it covers that were at hand go with it
                for stale in [stale for stale in self._cache if stale < self.next]:
                    del self._cache[stale]
        if (
            connection is not None and not self._fetching and len(self._cache) <= self.batch // 2
            and self._fetched_to < self._outbox.journal.last
        ):  # fmt: skip
            self._fetch()

    def _publish_again(self, connection: PahoConnection, key: int) -> bool:
        """End to end: publish an unconfirmed entry again; C{False} if the link is going."""
        record = self._unconfirmed.get(key)
        if record is None or not record.queued:
            return True  # confirmed meanwhile
        mid = connection.publish(self._topic, record.payload)
        if mid is None:
            self._again.appendleft(key)
            return False
        record.mid, record.queued, record.sent = mid, False, self._end_to_end.clock.seconds()
        self._by_mid[mid] = key
        self.published += 1
        return True

    def _stall(self, seq: int, size: int) -> None:
        if self._stalled_on != seq:
            self._stalled_on = seq
            self._log.error(
                "Cannot publish entry {seq} of the outbox: {size} bytes, over the broker's maximum "
                "packet size ({limit} bytes). It and what follows wait in the outbox; raise the "
                "broker's max_packet_size.",
                seq=seq, size=size, limit=self._max_packet,
            )  # fmt: skip

    def _fetch(self) -> None:
        self._fetching = True
        generation = self._generation
        after = max(self._fetched_to, self.next - 1)
        # The messages are made where the entries are read, in the outbox's thread, while the
        # reactor waits on the broker: a PUBACK is answered with messages made already.
        d = self._outbox.after(after, self.batch, self._messages)
        d.addCallbacks(self._fetched, self._fetch_failed, (generation,), None, (generation,))

    def _messages(self, entries: list[Entry]) -> list[tuple[Entry, bytes]]:
        """(In the outbox's thread.) Each entry with its message."""
        device = self._device
        return [(entry, stream_message(device, entry)) for entry in entries]

    def _fetched(self, entries: list[tuple[Entry, bytes]], generation: int) -> None:
        if generation != self._generation:
            return
        self._fetching = False
        for at_hand in entries:
            entry = at_hand[0]
            first, last = entry.first, entry.last
            if last >= self.next:
                # (a gap that starts before next was made while we published: outbox
                # full; it goes whole, and a consumer keeps what it already has)
                self._cache[max(first, self.next)] = at_hand
                self._fetched_to = max(self._fetched_to, last)
                if last > first:
                    for key in [key for key in self._cache if max(first, self.next) < key <= last]:
                        del self._cache[key]
        self.pump()

    def _fetch_failed(self, failure, generation: int) -> None:
        if generation == self._generation:
            self._fetching = False
        self._log.error(
            "Could not read the outbox to publish it: {error}. Check the disk.",
            error=failure.getErrorMessage(),
        )

    # -- acknowledgements --------------------------------------------------------------------

    def acknowledged(self, mid: int, refused: str | None) -> bool:
        """The broker's PUBACK for C{mid}; C{False} if it is not one of the stream's."""
        if mid not in self._by_mid:
            return False
        record = self._by_mid.pop(mid)
        confirming = self._end_to_end is not None
        if refused is not None:
            self._log.error(
                "The broker refused stream entry {seq}: {reason}. It stays in the outbox and is "
                "published again after a reconnect; check the broker's access rules (ACL) for "
                "this client and topic {topic}.",
                seq=record if confirming else record[1], reason=refused, topic=self._topic,
            )  # fmt: skip
            if self._on_refused is not None:
                self._on_refused(refused)
            return True
        if confirming:
            waiting = self._unconfirmed.get(record)
            if waiting is not None and waiting.mid == mid:
                waiting.mid = None  # the broker has it; its confirmation is awaited
            self.pump()
            return True
        record[2] = True
        delivered = None
        while self._in_flight and self._in_flight[0][2]:
            delivered = self._in_flight.popleft()[1]
        if delivered is not None and delivered > self.delivered:
            self._deliver(delivered)
        self.pump()
        return True

    def confirm(self, stream: str, spans: list[tuple[int, int]]) -> int:
        """
        End to end: a collector has committed the entries of C{stream} in
        C{spans} (each C{(first, last)}); those this Pi published are
        delivered. Returns how many were confirmed now (0 for another
        stream, or entries confirmed before).
        """
        if self._end_to_end is None or stream != self._outbox.journal.stream:
            return 0
        unconfirmed = self._unconfirmed
        confirmed = 0
        for first, last in spans:
            if last - first < len(unconfirmed):
                keys = [key for key in range(first, last + 1) if key in unconfirmed]
            else:
                keys = [key for key in unconfirmed if first <= key <= last]
            for key in keys:
                if unconfirmed[key].last <= last:
                    del unconfirmed[key]
                    confirmed += 1
        if confirmed:
            # Entries are published (and recorded) in order: the first one left bounds what is delivered.
            delivered = next(iter(unconfirmed)) - 1 if unconfirmed else self.next - 1
            if delivered > self.delivered:
                self._deliver(delivered)
            self.pump()
        return confirmed

    def _deliver(self, seq: int) -> None:
        self.delivered = seq
        self._on_delivered(seq)

    def _check_unconfirmed(self) -> None:
        """End to end: queue again each entry whose confirmation is overdue."""
        if not self._unconfirmed or self._connection is None:
            return
        now = self._end_to_end.clock.seconds()
        timeout = self._end_to_end.timeout
        due = [
            key for key, record in self._unconfirmed.items()
            if record.mid is None and not record.queued
            and now - record.sent >= timeout * min(2**record.tries, MAX_BACKOFF)
        ]  # fmt: skip
        for key in due:
            record = self._unconfirmed[key]
            record.queued = True
            record.tries += 1
            self._again.append(key)
        if due:
            self.republished += len(due)
            self._republish_log.warn(
                "No collector confirmed {count} readings within {seconds:g} s or more of their "
                "publication (from seq {first}): publishing them again. Are the collectors "
                "(collect --mqtt) running, and is their database taking writes?",
                key="republished", count=len(due), seconds=timeout, first=due[0],
            )  # fmt: skip
            self.pump()


class StatePublisher:
    """
    The latest state of each entity, retained on its state topic: as
    readings are committed to the outbox (only when it changed), and all of
    them again at each connect.

    @param kinds: each entity's kind by name (C{input}, C{sensor}, C{output});
        readings of other names (an input since removed) have no state topic.
    """

    def __init__(
        self, outbox: JournalService, outgoing: Outgoing, state_topic: Callable[[str], str], kinds: Mapping[str, str]
    ) -> None:
        self._outbox = outbox
        self._outgoing = outgoing
        self._topic = state_topic
        self._kinds = dict(kinds)
        self.latest: dict[str, bytes] = {}
        self._sent: dict[str, bytes] = {}
        self._connected = False
        outbox.add_listener(self._committed)

    def seed(self, latest: Mapping[str, Reading]) -> None:
        """The outbox's latest reading of each sensor, at start-up (newer ones win)."""
        for name, reading in latest.items():
            if name not in self.latest:
                self._take(reading)

    def attach(self) -> None:
        self._connected = True
        self._sent.clear()
        for name, payload in self.latest.items():
            self._send(name, payload)

    def detach(self) -> None:
        self._connected = False

    def stop(self) -> None:
        self._outbox.remove_listener(self._committed)

    def _committed(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.__class__ is Reading:
                name = self._take(entry)
                if name is not None and self._connected and self._sent.get(name) != self.latest[name]:
                    self._send(name, self.latest[name])

    def _take(self, reading: Reading) -> str | None:
        kind = self._kinds.get(reading.sensor)
        if kind is None:
            return None
        value = reading.value
        self.latest[reading.sensor] = measurement_state(value) if kind == "sensor" else binary_state(value)
        return reading.sensor

    def _send(self, name: str, payload: bytes) -> None:
        self._sent[name] = payload
        self._outgoing.put(self._topic(name), payload)
