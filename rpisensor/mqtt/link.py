"""
The Pi's link to its MQTT broker, kept up for as long as the service runs.

Each connection, in order:

  1. CONNECT with a clean start and a last will (C{offline}, retained, on the
     availability topic); on CONNACK, the broker's receive maximum and
     maximum packet size set how much may be in flight and how large.
  2. The birth (C{online}, retained), every entity's latest state, and the
     stream from the last entry the broker acknowledged.
  3. Subscriptions: Home Assistant's status; the outputs' command topics
     (with C{--mqtt-control}); this Pi's retained discovery configs, read
     back until the broker echoes a marker the Pi publishes after
     subscribing, so that all of them have arrived.
  4. Discovery: from what the broker held to what the Pi has now (see
     L{rpisensor.mqtt.discovery}); again whenever Home Assistant publishes
     C{online} on its status topic (after a random delay of up to a second,
     as Home Assistant asks, so that many devices do not answer at once).

A connection that fails or drops is tried again after the wait
L{RetrySchedule} gives (promptly after a link that worked, growing while
attempts fail, up to C{--max-delay}); every line about it is rate-limited.
On stop, C{offline} is published and the connection closed cleanly.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable

from twisted.internet.defer import Deferred

from rpisensor.mqtt.client import BrokerLimits, Handler, PahoConnection
from rpisensor.mqtt.control import MQTTControl
from rpisensor.mqtt.discovery import Discovery
from rpisensor.mqtt.outgoing import Outgoing
from rpisensor.mqtt.messages import MessageError, parse_ack_message
from rpisensor.mqtt.publisher import EndToEnd, StatePublisher, StreamPublisher
from rpisensor.mqtt.session import STOP_TIMEOUT, BrokerSession
from rpisensor.mqtt.settings import MQTTSettings
from rpisensor.stream.journal_service import JournalService

ONLINE, OFFLINE = b"online", b"offline"
#: Slots of the broker's receive maximum kept for retained messages (states, configs): the
#: stream has the rest, so a state never waits behind a catch-up. One: states coalesce per
#: topic while they wait, and the stream keeps as much of a small receive maximum as it can.
RETAINED_SLOTS = 1
#: Seconds to wait for the marker that says the retained configs have all arrived.
SYNC_TIMEOUT = 5.0
#: The longest random wait before announcing again when Home Assistant comes online.
ANNOUNCE_JITTER = 1.0


class MQTTLink(BrokerSession):
    """
    Publishes C{outbox} and the entities' states to the broker of
    C{settings}, announces them to Home Assistant (C{discovery}), and takes
    switch commands (C{control}).

    @param kinds: each entity's kind by name, for its state (see L{StatePublisher}).
    @param on_delivered: called with each seq up to which the broker has
        taken the stream (after the outbox let it go).
    @param connection_factory: makes one connection; tests give their own.
    """

    meanwhile = "Readings wait in the outbox."

    def __init__(
        self,
        reactor,
        settings: MQTTSettings,
        outbox: JournalService,
        discovery: Discovery,
        control: MQTTControl | None = None,
        connection_factory: Callable[..., PahoConnection] | None = None,
        jitter: Callable[[], float] = random.random,
        on_delivered: Callable[[int], object] | None = None,
    ) -> None:
        super().__init__(reactor, settings.broker, settings.max_delay, connection_factory)
        self.settings = settings
        self.outbox = outbox
        self.topics = discovery.topics
        self.discovery = discovery
        self.control = control
        self._jitter = jitter
        self.outgoing = Outgoing(self.log)
        end_to_end = None
        if settings.ack == "end-to-end":
            end_to_end = EndToEnd(reactor, settings.ack_timeout, settings.window)
        self._on_delivered = on_delivered
        self.stream = StreamPublisher(
            outbox, settings.device, self.topics.stream, on_delivered=self._delivered, on_refused=self._refused,
            end_to_end=end_to_end,
        )
        kinds = {entity.name: entity.kind for entity in discovery.entities}
        self.states = StatePublisher(outbox, self.outgoing, self.topics.state, kinds)
        self.limits: BrokerLimits | None = None
        self._announce_call = None
        self._sync_call = None
        self._subscription: int | None = None
        self._sync_token: bytes | None = None
        self._retained: dict[str, bytes] = {}

    def connect(self, handler: Handler) -> PahoConnection:
        settings = self.settings
        return PahoConnection(
            self._reactor, settings.broker, settings.client_id, handler,
            (self.topics.availability, OFFLINE), settings.keepalive, self._reactor.getThreadPool(),
            settings.connect_timeout,
        )  # fmt: skip

    def way_out(self) -> tuple[bool, str]:
        """For C{report}'s status line: C{(connected, "mqtt")}."""
        return self.connected, "mqtt"

    def _delivered(self, seq: int) -> None:
        self.outbox.acknowledge(seq)
        if self._on_delivered is not None:
            self._on_delivered(seq)

    # -- life ------------------------------------------------------------------------------

    def startService(self) -> None:
        self.outbox.latest_per_sensor().addCallbacks(self.states.seed, lambda _: None)
        super().startService()

    def stopService(self) -> Deferred:
        return super().stopService().addCallback(self._finished)

    async def before_stop(self) -> None:
        for call in (self._announce_call, self._sync_call):
            if call is not None and call.active():
                call.cancel()
        if self.connected:
            self.outgoing.put(self.topics.availability, OFFLINE)
            idle = self.outgoing.when_idle()
            idle.addTimeout(STOP_TIMEOUT, self._reactor)
            try:
                await idle
            except Exception:
                pass

    def _finished(self, _: None) -> None:
        self.stream.stop()
        self.states.stop()
        if self.control is not None:
            self.control.flush()

    # -- connected ---------------------------------------------------------------------------

    def up(self, connection: PahoConnection, limits: BrokerLimits) -> None:
        self.limits = limits
        slots = RETAINED_SLOTS
        window = max(1, min(self.settings.window, limits.receive_maximum - slots))
        end_to_end = self.settings.ack == "end-to-end"
        if end_to_end:  # before the stream: a collector's ack must find the subscription made
            connection.subscribe([self.topics.ack])
        if limits.receive_maximum <= slots:
            self.log.error(
                "The MQTT broker takes only {receive} message(s) in flight (its receive maximum); "
                "this Pi needs {needed} (the stream and the states). Raise the broker's "
                "max_inflight_messages; it may close the link meanwhile.",
                key="receive maximum", receive=limits.receive_maximum, needed=slots + 1,
            )  # fmt: skip
        self.log.info(
            "Connected to the MQTT broker {url} (receive maximum {receive}, maximum packet size "
            "{packet}): {count} readings to publish from the outbox, {window} at a time, on {topic}{mode}.",
            key="connected", url=self.settings.broker.url, receive=limits.receive_maximum,
            packet=limits.maximum_packet_size or "none", count=self.stream.waiting, window=window,
            topic=self.topics.stream,
            mode=f"; each let go of once a collector's database has it (acks on {self.topics.ack})"
            if end_to_end else "",
        )  # fmt: skip
        self.outgoing.attach(connection, slots, limits.maximum_packet_size)
        self.outgoing.put(self.topics.availability, ONLINE)
        self.states.attach()
        self.stream.attach(connection, window, limits.maximum_packet_size)
        if self.control is not None:
            self.control.connected(f"{self.settings.broker.url}, {self.topics.commands}")
        topics = [self.topics.ha_status]
        if self.control is not None:
            topics.append(self.topics.commands)
        self._retained = {}
        self._sync_token = None
        if self.discovery.mode != "none":
            self._sync_token = secrets.token_hex(8).encode()
            topics += [*self.discovery.readback, self.topics.sync]
        self._subscription = connection.subscribe(topics)

    def subscribed(self, mid: int, refused: str | None) -> None:
        if mid != self._subscription or self._sync_token is None:
            return
        # Retained configs come with the subscription; the marker comes after them.
        self.connection.publish(self.topics.sync, self._sync_token, qos=0)
        self._sync_call = self._reactor.callLater(SYNC_TIMEOUT, self._synced, False)

    def _synced(self, echoed: bool) -> None:
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        self._sync_call = None
        if self._sync_token is None:
            return
        self._sync_token = None
        if not echoed:
            self.log.warn(
                "The broker did not echo this Pi's marker on {topic} within {seconds:g} s (may this "
                "client publish and subscribe there?): announcing to Home Assistant without checking "
                "what it has, so entities removed since the last run stay.",
                key="no sync", topic=self.topics.sync, seconds=SYNC_TIMEOUT,
            )  # fmt: skip
        steps, gone_states = self.discovery.plan(self._retained)
        # The gone entities' states are cleared first: the broker takes one client's messages in
        # order, so once the final config is visible nothing of the old entities is left retained.
        for topic in gone_states:
            self.outgoing.put(topic, b"")
        for topic, payload in steps:
            self.outgoing.put(topic, payload, coalesce=False)
        if self.connection is not None:
            self.connection.unsubscribe([*self.discovery.readback, self.topics.sync])
        self._retained = {}

    # -- what the broker sends ----------------------------------------------------------------

    def message(self, topic: str, payload: bytes, retained: bool, mid: int | None) -> None:
        topics = self.topics
        if topic == topics.ack:
            self._confirmed(payload)
            return
        if topic == topics.sync:
            if self._sync_token is not None and payload == self._sync_token:
                self._synced(True)
            return
        if topic == topics.ha_status:
            if payload.strip() == ONLINE:
                self._announce_soon()
            return
        name = topics.commanded(topic)
        if name is not None and self.control is not None:
            if retained:
                self.log.warn(
                    "Ignored a retained command on {topic}: only a command sent now is carried out "
                    "(clear it: mosquitto_pub -r -n -t {topic}).",
                    key="retained command", topic=topic,
                )  # fmt: skip
                return
            self.control.command(name, payload)
            return
        if self._sync_token is not None and self._is_config(topic):
            self._retained[topic] = payload

    def _confirmed(self, payload: bytes) -> None:
        """A collector's ack: the entries its database committed."""
        try:
            stream, spans = parse_ack_message(payload)
        except MessageError as e:
            self.log.warn(
                "Ignored a message on {topic} that is not a collector's ack ({error}): only collectors "
                "should publish there (the broker's access rules can see to that).",
                key="bad ack", topic=self.topics.ack, error=str(e),
            )  # fmt: skip
            return
        self.stream.confirm(stream, spans)

    def _is_config(self, topic: str) -> bool:
        if topic == self.topics.device_config:
            return True
        parts = topic.split("/")
        head = self.topics.ha_prefix.split("/")
        return (
            len(parts) == len(head) + 4 and parts[: len(head)] == head
            and parts[len(head) + 1] == self.topics.node and parts[-1] == "config"
        )  # fmt: skip

    def _announce_soon(self) -> None:
        if self.discovery.mode == "none" or (self._announce_call is not None and self._announce_call.active()):
            return
        self._announce_call = self._reactor.callLater(ANNOUNCE_JITTER * self._jitter(), self._announce)

    def _announce(self) -> None:
        self._announce_call = None
        if not self.connected:
            return
        self.log.info("Home Assistant came online: announcing this Pi again.", key="announce")
        for topic, payload in self.discovery.announcement():
            self.outgoing.put(topic, payload, coalesce=False)

    def published(self, mid: int, refused: str | None) -> None:
        if not self.stream.acknowledged(mid, refused):
            self.outgoing.acknowledged(mid, refused)

    def _refused(self, reason: str) -> None:
        self.drop()

    # -- losing it ------------------------------------------------------------------------------

    def down(self) -> None:
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        self._sync_call = None
        self._sync_token = None
        self.stream.detach()
        self.states.detach()
        self.outgoing.detach()
        if self.control is not None:
            self.control.lost()
