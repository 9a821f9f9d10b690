"""
C{collect --listen ... --publish-mqtt URL}: the readings a collector takes
from Pis on rpisensor's own protocol, published to an MQTT broker as a Pi
with C{report --mqtt} would publish them: each entry as JSON on
C{PREFIX/DEVICE/stream}, QoS 1 (L{rpisensor.mqtt.messages.stream_message}).

An entry is published before it is stored, and acknowledged to its Pi only
once the broker acknowledged it (its PUBACK) and the store committed it:
the Pi lets go of a reading only once both have it. A collector killed
between the two leaves the reading unacknowledged; the Pi sends it again,
and it is published again (a consumer deduplicates on C{(device, stream,
seq)}, as QoS 1 means at least once) and stored once. While the broker is
away nothing is published, stored or acknowledged: the Pis keep their
readings, and send them when it is back.

Batches are handed on (to the store) in the order they came, each once the
broker acknowledged all of it and every batch before it; when one fails (the
broker refused an entry), every batch after it fails too, so that no
stream's later entries are stored behind a hole (their senders send them
all again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from rpisensor.entries import Entry
from rpisensor.mqtt.client import BrokerLimits, Handler, PahoConnection, packet_size
from rpisensor.mqtt.messages import stream_message
from rpisensor.mqtt.session import BrokerSession
from rpisensor.mqtt.settings import Broker
from rpisensor.mqtt.topics import Topics
from rpisensor.store import StoreClosed


class NotPublished(Exception):
    """The broker will not take an entry; the message says why (its sender sends it again later)."""


class _Batch:
    __slots__ = ("left", "done")

    def __init__(self, left: int) -> None:
        self.left = left
        self.done: Deferred[None] = Deferred()


class Bridge(BrokerSession):
    """
    Publishes entries to C{broker} under C{prefix}; L{publish} fires once
    the broker acknowledged them (in the order they were given).

    @param client_id: this collector's MQTT client id.
    """

    meanwhile = "Nothing is published, stored or acknowledged meanwhile: the Pis keep their readings."

    def __init__(
        self,
        reactor,
        broker: Broker,
        prefix: str,
        client_id: str,
        keepalive: int = 15,
        max_delay: float = 60.0,
        connection_factory: Callable[..., PahoConnection] | None = None,
    ) -> None:
        super().__init__(reactor, broker, max_delay, connection_factory)
        self.prefix = prefix
        self.client_id = client_id
        self.keepalive = keepalive
        #: Messages to publish, in order, and those the broker has not acknowledged: (topic, payload, batch).
        self._queue: deque[tuple[str, bytes, _Batch]] = deque()
        self._in_flight: dict[int, tuple[str, bytes, _Batch]] = {}
        self._batches: deque[_Batch] = deque()
        self._slots = 1
        self._max_packet: int | None = None
        #: Entries the broker acknowledged (repeats included), for tests and the log.
        self.published_entries = 0

    def connect(self, handler: Handler) -> PahoConnection:
        return PahoConnection(
            self._reactor, self.broker, self.client_id, handler, None, self.keepalive, self._reactor.getThreadPool()
        )

    @property
    def waiting(self) -> int:
        """Entries not yet acknowledged by the broker."""
        return len(self._queue) + len(self._in_flight)

    def publish(self, entries: list[Entry]) -> Deferred[None]:
        """Publish C{entries} (of any devices); fires once the broker acknowledged all of them."""
        if not self.running:
            return fail(StoreClosed("the collector is stopping: not published"))
        batch = _Batch(len(entries))
        self._batches.append(batch)
        for entry in entries:
            self._queue.append((Topics(self.prefix, entry.device).stream, stream_message(entry.device, entry), batch))
        self._pump()
        self._settle()
        return batch.done

    def up(self, connection: PahoConnection, limits: BrokerLimits) -> None:
        self._slots = max(1, limits.receive_maximum)
        self._max_packet = limits.maximum_packet_size
        self.log.info(
            "Connected to the MQTT broker {url}: publishing what the Pis send on {prefix}/DEVICE/stream; "
            "{count} entries waiting.",
            key="connected", url=self.broker.url, prefix=self.prefix, count=self.waiting,
        )  # fmt: skip
        self._pump()

    def down(self) -> None:
        # What the broker did not acknowledge goes again, first, on the next connection.
        in_flight, self._in_flight = self._in_flight, {}
        self._queue.extendleft(reversed(list(in_flight.values())))
        if not self.running:
            self._fail_all(Failure(StoreClosed("the collector is stopping: not published")))

    def published(self, mid: int, refused: str | None) -> None:
        sent = self._in_flight.pop(mid, None)
        if sent is None:
            return
        topic, _, batch = sent
        if refused is not None:
            self.log.error(
                "The MQTT broker {url} refused a reading on {topic}: {reason}. It is not acknowledged to "
                "its Pi, which sends it again later; check the broker's access rules (ACL) for this client.",
                key="refused", url=self.broker.url, topic=topic, reason=refused,
            )  # fmt: skip
            self._fail(batch, NotPublished(f"the MQTT broker refused it ({refused})"))
        else:
            batch.left -= 1
            self.published_entries += 1
        self._pump()
        self._settle()

    def _pump(self) -> None:
        connection = self.connection
        if connection is None or connection.state != "connected":
            return
        while self._queue and len(self._in_flight) < self._slots:
            topic, payload, batch = self._queue.popleft()
            if self._max_packet is not None and packet_size(topic, payload) > self._max_packet:
                self._fail(batch, NotPublished(f"{len(payload)} bytes, over the broker's maximum packet size"))
                continue
            mid = connection.publish(topic, payload)
            if mid is None:
                self._queue.appendleft((topic, payload, batch))
                return
            self._in_flight[mid] = (topic, payload, batch)

    def _settle(self) -> None:
        """Hand on, in order, the batches the broker has all of."""
        while self._batches and self._batches[0].left <= 0:
            self._batches.popleft().done.callback(None)

    def _fail(self, batch: _Batch, error: Exception) -> None:
        """C{batch} fails, and every batch after it."""
        if batch not in self._batches:
            return
        index = self._batches.index(batch)
        failed = [self._batches.pop() for _ in range(len(self._batches) - index)]
        self._queue = deque(item for item in self._queue if item[2] not in failed)
        for later in reversed(failed):
            if not later.done.called:
                later.done.errback(Failure(error))

    def _fail_all(self, failure: Failure) -> None:
        batches, self._batches = self._batches, deque()
        self._queue.clear()
        for batch in batches:
            if not batch.done.called:
                batch.done.errback(failure)
