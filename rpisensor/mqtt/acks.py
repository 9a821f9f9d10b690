"""
A collector's acks to the Pis (C{collect --mqtt}): which entries of a stream
its database committed, published on each Pi's ack topic, where a Pi with
C{--ack end-to-end} lets go of them.

Acks are QoS 1 and take the slots of the broker's receive maximum, the
collector's only publications. What waits for a slot is merged per stream
(the spans of seqs of one stream become one message, split only beyond
L{MAX_ACK_SPANS}), so what waits is bounded by what the collector took from
the broker, whatever the broker's pace. An ack the broker did not
acknowledge when the link dropped is put back and goes on the next
connection: a Pi that got it already ignores it.
"""

from __future__ import annotations

from collections import OrderedDict

from rpisensor.lograte import RateLimitedLog
from rpisensor.mqtt.client import PahoConnection
from rpisensor.mqtt.messages import MAX_ACK_SPANS, ack_message
from rpisensor.mqtt.topics import Topics


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """C{spans} sorted, overlapping and adjacent ones joined: C{[(5, 5), (1, 4), (7, 9)]} is C{[(1, 5), (7, 9)]}."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


class Acks:
    """The acks waiting to be published, per C{(device, stream)}, at most C{slots} unacknowledged by the broker."""

    def __init__(self, prefix: str, log: RateLimitedLog) -> None:
        self._prefix = prefix
        self._log = log
        self._waiting: OrderedDict[tuple[str, str], list[tuple[int, int]]] = OrderedDict()
        self._in_flight: dict[int, tuple[tuple[str, str], list[tuple[int, int]]]] = {}
        self._connection: PahoConnection | None = None
        self._slots = 1
        #: Ack messages the broker took, for tests and the log.
        self.published = 0

    @property
    def waiting(self) -> int:
        """Streams with acks waiting to be published."""
        return len(self._waiting)

    def put(self, device: str, stream: str, first: int, last: int) -> None:
        """Entries C{first}..C{last} of C{(device, stream)} are committed: say so at the next L{pump}."""
        self._waiting.setdefault((device, stream), []).append((first, last))

    def attach(self, connection: PahoConnection, slots: int) -> None:
        self._connection = connection
        self._slots = max(1, slots)
        self.pump()

    def detach(self) -> None:
        """The link is gone: what the broker did not acknowledge waits for the next one."""
        self._connection = None
        in_flight, self._in_flight = self._in_flight, {}
        for key, spans in in_flight.values():
            self._waiting.setdefault(key, []).extend(spans)

    def pump(self) -> None:
        connection = self._connection
        while connection is not None and self._waiting and len(self._in_flight) < self._slots:
            key, spans = self._waiting.popitem(last=False)
            spans = merged(spans)
            if len(spans) > MAX_ACK_SPANS:  # the rest waits for the next slot
                self._waiting[key] = spans[MAX_ACK_SPANS:]
                self._waiting.move_to_end(key, last=False)
                spans = spans[:MAX_ACK_SPANS]
            device, stream = key
            mid = connection.publish(Topics(self._prefix, device).ack, ack_message(stream, spans))
            if mid is None:  # the link is going: it waits for the next one
                self._waiting.setdefault(key, []).extend(spans)
                self._waiting.move_to_end(key, last=False)
                return
            self._in_flight[mid] = (key, spans)

    def acknowledged(self, mid: int, refused: str | None) -> None:
        """The broker's PUBACK for ack C{mid}."""
        sent = self._in_flight.pop(mid, None)
        if sent is None:
            return
        if refused is not None:
            (device, _), _ = sent
            self._log.error(
                "The broker refused this collector's ack on {topic}: {reason}. The Pi publishes those "
                "readings again; check the broker's access rules (ACL): collectors must be allowed to "
                "publish on PREFIX/+/ack.",
                key="ack refused", topic=Topics(self._prefix, device).ack, reason=refused,
            )  # fmt: skip
        else:
            self.published += 1
        self.pump()
