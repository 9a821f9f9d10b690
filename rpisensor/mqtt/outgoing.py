"""
The retained messages the Pi publishes besides its stream: its availability,
Home Assistant's discovery configs, and every entity's latest state.

Each is QoS 1 and takes one of a few slots of the broker's receive maximum
(the stream has the rest). What waits for a slot is bounded: a state, the
availability or anything else put with C{coalesce} replaces what waits for
the same topic (only the latest of a retained topic matters); discovery's
steps, which must reach Home Assistant in order, each wait their turn, and
there are as many as the Pi has configs. Nothing waits across connections:
at each connect the link puts again what the new connection must carry.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import count

from twisted.internet.defer import Deferred

from rpisensor.lograte import RateLimitedLog
from rpisensor.mqtt.client import PahoConnection, packet_size


class Outgoing:
    """Retained QoS 1 messages, in order, at most C{slots} unacknowledged."""

    def __init__(self, log: RateLimitedLog) -> None:
        self._log = log
        self._pending: OrderedDict[object, tuple[str, bytes]] = OrderedDict()
        self._in_flight: dict[int, str] = {}
        self._connection: PahoConnection | None = None
        self._slots = 1
        self._max_packet: int | None = None
        self._sequence = count()
        self._idle: list[Deferred] = []
        #: Messages the broker acknowledged, for tests and the log.
        self.published = 0

    def attach(self, connection: PahoConnection, slots: int, max_packet: int | None) -> None:
        self._connection = connection
        self._slots = max(1, slots)
        self._max_packet = max_packet
        self._pending.clear()
        self._in_flight.clear()
        self.pump()

    def detach(self) -> None:
        self._connection = None
        self._pending.clear()
        self._in_flight.clear()
        self._settle()

    def put(self, topic: str, payload: bytes, coalesce: bool = True) -> None:
        """Publish C{payload} retained on C{topic} when a slot is free (while connected)."""
        if self._connection is None:
            return
        if coalesce:
            self._pending.pop(topic, None)
            self._pending[topic] = (topic, payload)
        else:
            self._pending[(topic, next(self._sequence))] = (topic, payload)
        self.pump()

    def pump(self) -> None:
        connection = self._connection
        while connection is not None and self._pending and len(self._in_flight) < self._slots:
            _, (topic, payload) = self._pending.popitem(last=False)
            if self._max_packet is not None and packet_size(topic, payload) > self._max_packet:
                self._log.error(
                    "Cannot publish {topic}: {size} bytes, over the broker's maximum packet size "
                    "({limit} bytes). Raise the broker's max_packet_size.",
                    key="too large", topic=topic, size=packet_size(topic, payload), limit=self._max_packet,
                )  # fmt: skip
                continue
            mid = connection.publish(topic, payload, retain=True)
            if mid is None:
                return  # the link is going: the next connection puts everything again
            self._in_flight[mid] = topic
        self._settle()

    def acknowledged(self, mid: int, refused: str | None) -> bool:
        """The broker's PUBACK for C{mid}; C{False} if it is not one of ours."""
        topic = self._in_flight.pop(mid, None)
        if topic is None:
            return False
        if refused is not None:
            self._log.error(
                "The broker refused the retained message on {topic}: {reason}. Check its access "
                "rules (ACL) for this client.",
                key="retained refused", topic=topic, reason=refused,
            )  # fmt: skip
        else:
            self.published += 1
        self.pump()
        return True

    def when_idle(self) -> Deferred:
        """Fires once nothing waits or is unacknowledged (at once when so, or when disconnected)."""
        d: Deferred = Deferred()
        self._idle.append(d)
        self._settle()
        return d

    def _settle(self) -> None:
        if self._idle and (self._connection is None or not (self._pending or self._in_flight)):
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)
