"""
C{collect --mqtt URL}: the Pis' streams from an MQTT broker into the store,
each reading once, and an ack back to each Pi once its database committed it.

The collector subscribes to every Pi's stream topic through an MQTT v5
shared subscription (C{$share/GROUP/PREFIX/+/stream}): the broker gives each
message to one collector of the group, so K collectors split the load, and
when one goes the broker gives the rest to the others. Each connection:

  1. CONNECT with a clean start and a receive maximum of its own (the most
     messages the broker sends before this collector acknowledged them: the
     flow control, and the bound on what it holds in memory).
  2. SUBSCRIBE to the shared stream topics with QoS 1.
  3. Each message is read (L{rpisensor.mqtt.messages.parse_stream_message};
     one that is not a Pi's stream entry, or names another device than its
     topic, is logged and dropped), and the entries that arrived in one turn
     of the reactor go to the store as one batch.
  4. Once the batch is committed: an ack per stream on each Pi's ack topic
     (L{rpisensor.mqtt.acks}), then the PUBACK of each message to the
     broker. A batch the store could not take is acknowledged to the broker
     but not to the Pi, which publishes it again after its ack timeout.

Nothing is acknowledged before the commit: a collector killed with messages
in hand leaves them unacknowledged to the Pi (Mosquitto drops what it had
given to a shared subscriber that is gone; the Pi publishes it again), and
whatever comes twice is stored once (see L{rpisensor.store.postgresql}).

Messages of one stream reach the collectors of the group in turn (Mosquitto
takes the subscribers round robin, message by message), and a reading
published again comes after later ones: entries arrive in any order. The
store takes each where it falls and moves the stream's watermark over what it
holds without a hole; this collector never waits for an entry another has.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from rpisensor.mqtt.acks import Acks
from rpisensor.mqtt.client import BrokerLimits, Handler, PahoConnection
from rpisensor.mqtt.messages import MessageError, parse_stream_message
from rpisensor.mqtt.session import BrokerSession
from rpisensor.mqtt.settings import DEFAULT_PREFIX, Broker
from rpisensor.mqtt.topics import shared_streams, stream_device
from rpisensor.store import StoreClosed

#: The shared subscription's group when C{--mqtt-group} names none.
DEFAULT_GROUP = "rpisensor"
#: Messages the broker may send a collector before it acknowledged them (after its commit).
RECEIVE_MAXIMUM = 2000
#: Seconds a clean stop waits for the batches being stored, so that their acks go out.
STOP_TIMEOUT = 10.0


def default_client_id() -> str:
    """A client id of its own per collector process: C{rpisensor-collect-HOST-1a2b3c}."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"rpisensor-collect-{host}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class IngestSettings:
    """
    How a collector takes the Pis' streams from a broker.

    @ivar prefix: the first level(s) of the Pis' topics (as their C{--mqtt-prefix}).
    @ivar group: the shared subscription's group: the collectors of one group share the load.
    @ivar client_id: this collector's MQTT client id (one per process).
    @ivar keepalive: seconds of MQTT keep-alive.
    @ivar receive_maximum: messages the broker may send before this collector acknowledged them.
    """

    broker: Broker
    prefix: str = DEFAULT_PREFIX
    group: str = DEFAULT_GROUP
    client_id: str = ""
    keepalive: int = 15
    max_delay: float = 60.0
    receive_maximum: int = RECEIVE_MAXIMUM
    connect_timeout: float = 10.0


class StreamIngest(BrokerSession):
    """
    The Pis' streams from C{settings.broker} into C{deliver}.

    @param deliver: C{deliver(entries) -> Deferred}, firing once all are
        durably stored (the collector's L{rpisensor.stream.delivery.Delivery.many}).
    @param stamp: the time now, as a record's C{received}.
    @param show: told each batch once stored (the collector's log lines).
    @param connection_factory: makes one connection; tests give their own.
    """

    def __init__(
        self,
        reactor,
        settings: IngestSettings,
        deliver: Callable[[list], Deferred],
        stamp: Callable[[], str],
        show: Callable[[list], object] | None = None,
        connection_factory: Callable[..., PahoConnection] | None = None,
    ) -> None:
        super().__init__(reactor, settings.broker, settings.max_delay, connection_factory)
        self.settings = settings
        self.client_id = settings.client_id or default_client_id()
        self._deliver = deliver
        self._stamp = stamp
        self._show = show
        self.acks = Acks(settings.prefix, self.log)
        self._flush_call = None
        #: Entries taken from the broker and not yet handed to the store, with their mids.
        self._pending: list = []
        self._mids: list[int] = []
        #: Batches handed to the store and not yet stored, and who waits until there are none.
        self._storing = 0
        self._idle: list[Deferred] = []
        #: Entries stored and acknowledged, messages dropped: for tests and the log.
        self.stored = 0
        self.dropped = 0

    def connect(self, handler: Handler) -> PahoConnection:
        settings = self.settings
        return PahoConnection(
            self._reactor, settings.broker, self.client_id, handler, None, settings.keepalive,
            self._reactor.getThreadPool(), settings.connect_timeout, receive_maximum=settings.receive_maximum,
            manual_ack=True,
        )  # fmt: skip

    @property
    def subscription(self) -> str:
        return shared_streams(self.settings.prefix, self.settings.group)

    async def before_stop(self) -> None:
        # What is being stored gets its acks out before the link closes (or the Pis send it again).
        self._flush()
        if self._storing:
            idle: Deferred = Deferred()
            self._idle.append(idle)
            idle.addTimeout(STOP_TIMEOUT, self._reactor)
            try:
                await idle
            except Exception:
                pass

    def up(self, connection: PahoConnection, limits: BrokerLimits) -> None:
        self.log.info(
            "Connected to the MQTT broker {url}: storing the Pis' streams from {topic} (up to {receive} "
            "messages at a time), each acknowledged on its Pi's ack topic once stored.",
            key="connected", url=self.broker.url, topic=self.subscription, receive=self.settings.receive_maximum,
        )  # fmt: skip
        self.acks.attach(connection, limits.receive_maximum)
        connection.subscribe([self.subscription])

    def down(self) -> None:
        self.acks.detach()
        # Entries taken but not yet handed over still go to the store; their PUBACKs are moot.
        self._flush()

    def subscribed(self, mid: int, refused: str | None) -> None:
        if refused is not None:
            self.log.error(
                "The MQTT broker {url} refused the subscription {topic}: {reason}. Does it take MQTT v5 "
                "shared subscriptions, and may this client subscribe there (its access rules)? Closing "
                "the link to try again later.",
                key="subscription refused", url=self.broker.url, topic=self.subscription, reason=refused,
            )  # fmt: skip
            self.drop()

    def published(self, mid: int, refused: str | None) -> None:
        self.acks.acknowledged(mid, refused)

    # -- what the broker sends ----------------------------------------------------------------

    def message(self, topic: str, payload: bytes, retained: bool, mid: int) -> None:
        device = stream_device(self.settings.prefix, topic)
        try:
            if device is None:
                raise MessageError(f"not a stream topic ({self.settings.prefix}/DEVICE/stream)")
            sender, entry = parse_stream_message(payload)
            if sender != device:
                raise MessageError(f"it names device {sender!r}, but came on the topic of {device!r}")
        except MessageError as e:
            self.dropped += 1
            self.log.warn(
                "Dropped a message on {topic}: {error}. Only rpisensor reporters should publish on "
                "stream topics (the broker's access rules can see to that).",
                key="bad stream messages", topic=topic[:200], error=str(e)[:300],
            )  # fmt: skip
            self.connection.ack(mid)
            return
        entry.peer, entry.received = self.broker.url, self._stamp()
        self._pending.append(entry)
        self._mids.append(mid)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        """What arrived in this turn of the reactor goes to the store as one batch."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if not self._pending:
            return
        entries, self._pending = self._pending, []
        mids, self._mids = self._mids, []
        self._storing += 1
        self._deliver(entries).addBoth(self._stored, entries, mids, self.connection)

    def _stored(self, result, entries: list, mids: list[int], connection) -> None:
        self._storing -= 1
        if isinstance(result, Failure):
            if not result.check(StoreClosed):
                self.log.error(
                    "Could not store {count} entries from the MQTT broker: {error}. Not acknowledged to "
                    "their Pis, which publish them again. Check the store.",
                    key="store failed", count=len(entries), error=result.getErrorMessage(),
                )  # fmt: skip
                self._puback(connection, mids)
        else:
            for entry in entries:
                self.acks.put(entry.device, entry.stream, entry.first, entry.last)
            self.acks.pump()
            self.stored += len(entries)
            self._puback(connection, mids)
            if self._show is not None:
                self._show(entries)
        if not self._storing:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _puback(self, connection: PahoConnection | None, mids: list[int]) -> None:
        # Only on the connection the messages came on: a new one has its own packet ids.
        if connection is not None and connection is self.connection and connection.state == "connected":
            for mid in mids:
                connection.ack(mid)
