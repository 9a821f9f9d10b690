"""
The outbox on MQTT.

L{StreamPublisher} publishes every entry of the outbox, in order, with QoS 1
on the stream topic, and lets the outbox go of an entry only once the broker
acknowledged it and everything before it (its PUBACK). At most C{window}
entries are unacknowledged (never more than the broker's receive maximum
allows); what waits stays in the outbox on disk, which is the only queue:
entries are read from it a batch at a time, or taken as they are committed
when the stream is live. After a reconnect (and after a restart) it starts
again after the last entry acknowledged: an entry whose PUBACK was lost with
the link is published again, so a consumer deduplicates on
C{(device, stream, seq)}, as QoS 1 means at least once.

What "delivered" means is the caller's: C{on_delivered} (by default the
outbox's C{acknowledge}) is told the seq through which the broker has
everything. An end-to-end mode, in which a collector's commit lets the
outbox go, gives a callback that only records the PUBACK and acknowledges
the outbox when the collector's ack comes.

L{StatePublisher} keeps each entity's latest state retained on its state
topic, as the readings are committed, and all of them again at each connect.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from twisted.logger import Logger

from rpisensor.entries import Entry, Reading
from rpisensor.mqtt.client import PahoConnection, packet_size
from rpisensor.mqtt.messages import binary_state, measurement_state, stream_message
from rpisensor.mqtt.outgoing import Outgoing
from rpisensor.stream.journal_service import JournalService

#: Entries read from the outbox at a time while catching up (at least the window); the next
#: read starts when half of them are left, so at most one and a half of these are in memory.
FETCH = 500


class StreamPublisher:
    """
    The outbox's entries on C{topic}, from the last one delivered on.

    @param on_delivered: told the seq through which the broker acknowledged
        everything, each time it grows.
    @param on_refused: told the broker's reason when it refuses an entry
        (its PUBACK carries an error): the entry stays in the outbox, and the
        caller ends the connection to try again later.
    """

    _log = Logger(namespace="rpisensor.mqtt")

    def __init__(
        self,
        outbox: JournalService,
        device: str,
        topic: str,
        on_delivered: Callable[[int], object] | None = None,
        on_refused: Callable[[str], object] | None = None,
    ) -> None:
        self._outbox = outbox
        self._device = device
        self._topic = topic
        self._on_delivered = on_delivered if on_delivered is not None else outbox.acknowledge
        self._on_refused = on_refused
        #: Every entry up to this one is delivered.
        self.delivered = outbox.acked
        #: How many entries were published, over every connection (repeats included).
        self.published = 0
        self._connection: PahoConnection | None = None
        self.window = 1
        self._max_packet: int | None = None
        self.next = self.delivered + 1
        #: Published and unacknowledged, in order: [mid, last seq, acknowledged].
        self._in_flight: deque[list] = deque()
        self._by_mid: dict[int, list] = {}
        #: Entries at hand, by their first seq, contiguous from next to fetched_to.
        self._cache: dict[int, Entry] = {}
        self._fetched_to = self.delivered
        self._fetching = False
        self._generation = 0
        self._stalled_on: int | None = None
        outbox.add_listener(self._committed)

    @property
    def batch(self) -> int:
        return max(self.window, FETCH)

    @property
    def waiting(self) -> int:
        """Entries of the outbox not yet delivered."""
        return max(0, self._outbox.journal.last - self.delivered)

    def attach(self, connection: PahoConnection, window: int, max_packet: int | None) -> None:
        """A connection is up: publish from the last delivered entry on."""
        self._generation += 1
        self._connection = connection
        self.window = max(1, window)
        self._max_packet = max_packet
        self.delivered = max(self.delivered, self._outbox.acked)
        self.next = self.delivered + 1
        self._in_flight.clear()
        self._by_mid.clear()
        self._cache.clear()
        self._fetched_to = self.delivered
        self._fetching = False
        self._stalled_on = None
        self.pump()

    def detach(self) -> None:
        """The connection is gone: what was unacknowledged goes again on the next one."""
        self._generation += 1
        self._connection = None
        self._in_flight.clear()
        self._by_mid.clear()
        self._cache.clear()
        self._fetching = False

    def stop(self) -> None:
        self.detach()
        self._outbox.remove_listener(self._committed)

    # -- publishing -------------------------------------------------------------------------

    def _committed(self, entries: list[Entry]) -> None:
        if self._connection is None:
            return
        for entry in entries:
            first, last = entry.first, entry.last
            if first == self._fetched_to + 1 and len(self._cache) < self.batch + self.batch // 2:
                self._cache[first] = entry
                self._fetched_to = last
        self.pump()

    def pump(self) -> None:
        """Publish what the window and the entries at hand allow; read more from the outbox meanwhile."""
        connection = self._connection
        while connection is not None and len(self._by_mid) < self.window:
            entry = self._cache.get(self.next)
            if entry is None:
                break
            payload = stream_message(self._device, entry)
            if self._max_packet is not None and packet_size(self._topic, payload) > self._max_packet:
                self._stall(entry.first, len(payload))
                return
            mid = connection.publish(self._topic, payload)
            if mid is None:
                return  # the link is going
            del self._cache[self.next]
            last = entry.last
            record = [mid, last, False]
            self._in_flight.append(record)
            self._by_mid[mid] = record
            self.published += 1
            self.next = last + 1
            if last > entry.first:  # a gap: readings it covers that were at hand go with it
                for key in [key for key in self._cache if key < self.next]:
                    del self._cache[key]
        if (
            connection is not None and not self._fetching and len(self._cache) <= self.batch // 2
            and self._fetched_to < self._outbox.journal.last
        ):  # fmt: skip
            self._fetch()

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
        d = self._outbox.after(after, self.batch)
        d.addCallbacks(self._fetched, self._fetch_failed, (generation,), None, (generation,))

    def _fetched(self, entries: list[Entry], generation: int) -> None:
        if generation != self._generation:
            return
        self._fetching = False
        for entry in entries:
            first, last = entry.first, entry.last
            if last >= self.next:
                # (a gap that starts before next was made while we published: outbox
                # full; it goes whole, and a consumer keeps what it already has)
                self._cache[max(first, self.next)] = entry
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
        record = self._by_mid.pop(mid, None)
        if record is None:
            return False
        if refused is not None:
            self._log.error(
                "The broker refused stream entry {seq}: {reason}. It stays in the outbox and is "
                "published again after a reconnect; check the broker's access rules (ACL) for "
                "this client and topic {topic}.",
                seq=record[1], reason=refused, topic=self._topic,
            )  # fmt: skip
            if self._on_refused is not None:
                self._on_refused(refused)
            return True
        record[2] = True
        delivered = None
        while self._in_flight and self._in_flight[0][2]:
            delivered = self._in_flight.popleft()[1]
        if delivered is not None and delivered > self.delivered:
            self.delivered = delivered
            self._on_delivered(delivered)
        self.pump()
        return True


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
