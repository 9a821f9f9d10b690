"""
One MQTT v5 connection: paho-mqtt's client, driven by the reactor.

paho's external-loop API does the protocol (packets, packet ids, keep-alive,
TLS); the reactor does the waiting: the socket is registered with the
reactor, readable calls C{loop_read}, writable calls C{loop_write} (paho asks
for it through its register-write callback when it has bytes it could not
send), and a timer calls C{loop_misc} once a second for the keep-alive.
Nothing here ever blocks the reactor, except in one place paho cannot help:
its C{connect} resolves the name, connects and does the TLS handshake
blocking, so it runs in a thread; the socket it leaves, non-blocking, is
handed to the reactor only once that thread has finished with the client.

paho keeps QoS 1 messages in memory until their PUBACK, and queues without
bound what goes beyond its in-flight limit; here its limit is off and the
caller keeps the count (L{BrokerLimits.receive_maximum}), so paho holds at
most what the broker allows in flight. Every connection gets a new paho
client with a clean start: what was in flight is published again from the
outbox, never from paho's memory.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.mqtt.settings import Broker

#: The largest packet this client takes from the broker: a command or Home
#: Assistant's status is a few bytes, a discovery config read back a few KiB.
MAX_INCOMING_PACKET = 256 * 1024
#: QoS 1 messages the broker may have in flight to us (our subscriptions are few and small).
INCOMING_RECEIVE_MAXIMUM = 100
#: MQTT's default receive maximum, when the broker's CONNACK names none.
DEFAULT_RECEIVE_MAXIMUM = 65535


class ConnectFailed(Exception):
    """The connection could not be made, or the broker refused it; the text says why."""


@dataclass(frozen=True)
class BrokerLimits:
    """
    What the broker's CONNACK allows.

    @ivar receive_maximum: QoS 1 messages it takes unacknowledged at once.
    @ivar maximum_packet_size: the largest packet it takes (C{None}: no limit).
    """

    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    maximum_packet_size: int | None = None


class Handler:
    """What a L{PahoConnection} tells its user (every call on the reactor's thread)."""

    def published(self, mid: int, refused: str | None) -> None:
        """The broker acknowledged message C{mid}; C{refused} is its reason when it did not take it."""

    def message(self, topic: str, payload: bytes, retained: bool, mid: int) -> None:
        """
        A message on a subscribed topic; C{mid} is what L{PahoConnection.ack}
        takes for it, where the connection acknowledges by hand.
        """

    def subscribed(self, mid: int, refused: str | None) -> None:
        """The broker answered subscription C{mid}; C{refused} is its reason where it refused a topic."""

    def lost(self, reason: str) -> None:
        """The connection ended (not called when it never connected: C{connect} fails instead)."""


def _paho():
    import paho.mqtt.client as mqtt  # here, not at the top: only --mqtt needs paho

    return mqtt


def packet_size(topic: str, payload: bytes, qos: int = 1) -> int:
    """The bytes of a PUBLISH packet without properties, as the broker's maximum packet size counts them."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + 1 + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + length_bytes + remaining


@implementer(IReadDescriptor, IWriteDescriptor)
class _SocketWatch:
    """The connection's socket as the reactor watches it."""

    def __init__(self, connection: PahoConnection, fd: int) -> None:
        self._connection = connection
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "mqtt"

    def doRead(self):
        self._connection._readable()

    def doWrite(self):
        self._connection._writable()

    def connectionLost(self, reason) -> None:
        self._connection._hung_up()


class PahoConnection:
    """
    One connection to C{broker}, from C{connect} until C{lost}.

    @param will: the last will, C{(topic, payload)}: published (retained,
        QoS 1) by the broker when this connection ends without a clean
        disconnect, or with L{abort}; C{None}: none.
    @param keepalive: seconds of MQTT keep-alive.
    @param threads: the pool the blocking connect runs in.
    @param receive_maximum: QoS 1 messages the broker may send us before we acknowledged them.
    @param manual_ack: the user acknowledges each QoS 1 message it got with
        L{ack} (e.g. once it is stored), instead of paho as it arrives.
    """

    _log = Logger(namespace="rpisensor.mqtt")

    def __init__(
        self,
        reactor,
        broker: Broker,
        client_id: str,
        handler: Handler,
        will: tuple[str, bytes] | None,
        keepalive: int,
        threads,
        connect_timeout: float = 10.0,
        receive_maximum: int = INCOMING_RECEIVE_MAXIMUM,
        manual_ack: bool = False,
    ) -> None:
        mqtt = _paho()
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._reactor = reactor
        self.broker = broker
        self._handler = handler
        self._keepalive = keepalive
        self._threads = threads
        self._connect_timeout = connect_timeout
        client = self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
            reconnect_on_failure=False, manual_ack=manual_ack,
        )  # fmt: skip
        client.suppress_exceptions = True  # our callbacks log their own failures (and no on_log: it
        # formats a line for every packet)
        client.max_inflight_messages = 0  # the caller keeps to the broker's receive maximum
        client.connect_timeout = connect_timeout
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if will is not None:
            will_properties = Properties(PacketTypes.WILLMESSAGE)
            client.will_set(will[0], will[1], qos=1, retain=True, properties=will_properties)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 0
        properties.ReceiveMaximum = receive_maximum
        properties.MaximumPacketSize = MAX_INCOMING_PACKET
        self._connect_properties = properties
        self._watch: _SocketWatch | None = None
        #: Inside loop_read (paho's callbacks may publish: written after it), and whether the
        #: reactor watches the socket for room to write.
        self._reading = False
        self._writing = False
        self._misc: LoopingCall | None = None
        self._connected: Deferred | None = None
        self._connack_timeout = None
        self.limits: BrokerLimits | None = None
        #: C{connecting}, C{connected} (the broker accepted), C{closed}.
        self.state = "connecting"

    # -- connecting ------------------------------------------------------------------

    def connect(self) -> Deferred:
        """
        Connect, and fire with the broker's L{BrokerLimits} once it accepted
        (its CONNACK); fail with L{ConnectFailed} otherwise.
        """
        self._connected = Deferred()
        d = deferToThreadPool(self._reactor, self._threads, self._connect_in_thread)
        d.addCallbacks(self._socket_ready, self._connect_failed)
        return self._connected

    def _connect_in_thread(self) -> None:
        """In a thread: resolve, connect, TLS handshake, send CONNECT (paho writes it itself)."""
        client = self._client
        if self.broker.tls:
            client.tls_set_context(self._tls_context())
        rc = client.connect(
            self.broker.host, self.broker.port, self._keepalive, clean_start=True,
            properties=self._connect_properties,
        )  # fmt: skip
        if rc != 0 or client.socket() is None:
            raise ConnectFailed(_paho().error_string(rc))

    def _tls_context(self) -> ssl.SSLContext:
        broker = self.broker
        context = ssl.create_default_context(cafile=broker.ca)
        if broker.certificate is not None:
            context.load_cert_chain(broker.certificate, broker.key)
        return context

    @property
    def open(self) -> bool:
        """The socket is the reactor's (connecting or connected)."""
        return self._watch is not None and self.state != "closed"

    def _connect_failed(self, failure: Failure) -> None:
        self.state = "closed"
        error = failure.value
        if isinstance(error, ssl.SSLCertVerificationError):
            why = f"the broker's certificate was not accepted: {error.verify_message or error}"
        elif isinstance(error, ssl.SSLError):
            why = f"TLS failed: {error.reason or error}"
        elif isinstance(error, socket.gaierror):
            why = f"cannot resolve {self.broker.host}: {error.strerror}"
        elif isinstance(error, (TimeoutError, socket.timeout)):
            why = f"no answer within {self._connect_timeout:g} s"
        elif isinstance(error, OSError):
            why = error.strerror or str(error)
        else:
            why = str(error) or type(error).__name__
        self._fail_connect(why)

    def _fail_connect(self, why: str) -> None:
        d, self._connected = self._connected, None
        if d is not None:
            d.errback(Failure(ConnectFailed(why)))

    def _socket_ready(self, _) -> None:
        """Back on the reactor's thread: from now on the reactor drives the client."""
        client = self._client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        if self.state == "closed":  # (aborted while the thread connected)
            client.socket().close()
            return
        self._watch = _SocketWatch(self, client.socket().fileno())
        self._reactor.addReader(self._watch)
        if client.want_write():
            self._reactor.addWriter(self._watch)
            self._writing = True
        self._misc = LoopingCall(self._tick)
        self._misc.clock = self._reactor
        self._misc.start(1.0, now=False)
        self._connack_timeout = self._reactor.callLater(self._connect_timeout, self._no_connack)

    def _no_connack(self) -> None:
        self._connack_timeout = None
        self._fail_connect(f"the broker did not answer CONNECT within {self._connect_timeout:g} s")
        self.abort()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if self._connack_timeout is not None and self._connack_timeout.active():
            self._connack_timeout.cancel()
        self._connack_timeout = None
        if reason.is_failure:
            self._fail_connect(f"the broker refused the connection: {reason}")
            self.abort()
            return
        limits = BrokerLimits(
            getattr(properties, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM),
            getattr(properties, "MaximumPacketSize", None),
        )
        self.limits = limits
        self.state = "connected"
        d, self._connected = self._connected, None
        if d is not None:
            d.callback(limits)

    # -- using it --------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> int | None:
        """Publish; the mid whose L{Handler.published} follows (QoS 1), or C{None} if the link is gone."""
        if not self.open:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != 0:
            return None
        return info.mid

    def subscribe(self, topics: list[str]) -> int | None:
        """Subscribe to C{topics} with QoS 1; the mid whose L{Handler.subscribed} follows."""
        if not self.open:
            return None
        rc, mid = self._client.subscribe([(topic, 1) for topic in topics])
        return mid if rc == 0 else None

    def ack(self, mid: int) -> None:
        """Acknowledge the QoS 1 message C{mid} (with C{manual_ack}); nothing if the link is gone."""
        if self.open:
            self._client.ack(mid, 1)

    def unsubscribe(self, topics: list[str]) -> None:
        if self.open:
            self._client.unsubscribe(topics)

    def disconnect(self) -> None:
        """End cleanly (DISCONNECT: the broker does not send the last will)."""
        if self.open:
            self._client.disconnect()

    def abort(self) -> None:
        """
        End, without DISCONNECT: the broker sends the last will. (In the next
        turn of the reactor: this may be called from paho's own callbacks,
        during which paho must not be asked to read.)
        """
        self._reactor.callLater(0, self._abort_now)

    def _abort_now(self) -> None:
        sock = self._client.socket()
        if sock is None or self._watch is None:
            self._closing()  # (still connecting in the thread: its socket is closed when it returns)
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._readable()  # paho reads the end, closes the socket and says so
        if self._client.socket() is not None:  # (it did not notice: stop watching; the socket goes with paho's client)
            self._on_socket_close(None, None, None)
            self._closing("aborted")

    # -- the reactor's side ------------------------------------------------------------------

    def _readable(self) -> None:
        client = self._client
        self._reading = True
        try:
            client.loop_read()
            sock = client.socket()
            # TLS: records already decrypted are not seen by the reactor as readable.
            while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
                client.loop_read()
                sock = client.socket()
        finally:
            self._reading = False
        # What the acknowledgements just read made us publish goes out now, in this turn of
        # the reactor (paho's callbacks are over: it may write), not in the next one.
        if sock is not None and client.want_write():
            self._writable()

    def _writable(self) -> None:
        client = self._client
        client.loop_write()
        if client.want_write() and client.socket() is not None and not self._writing and self._watch is not None:
            # (paho asked while reading, and asks once: watch for room in the socket now)
            self._reactor.addWriter(self._watch)
            self._writing = True

    def _hung_up(self) -> None:
        # The reactor saw the socket hang up, and stopped watching it: paho reads the end.
        self._watch = None
        if self._client.socket() is not None:
            self._readable()
        if self._client.socket() is not None:
            self.abort()

    def _tick(self) -> None:
        self._client.loop_misc()

    def _on_register_write(self, client, userdata, sock) -> None:
        if self._reading:
            return  # written once the read is over (see _readable)
        if self._watch is not None and not self._writing:
            self._reactor.addWriter(self._watch)
            self._writing = True

    def _on_unregister_write(self, client, userdata, sock) -> None:
        if self._watch is not None and self._writing:
            self._reactor.removeWriter(self._watch)
        self._writing = False

    def _on_socket_close(self, client, userdata, sock) -> None:
        if self._watch is not None:
            self._reactor.removeReader(self._watch)
            self._reactor.removeWriter(self._watch)
            self._watch = None
        self._writing = False

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._fail_connect(f"the broker closed the connection ({reason})")
        self._closing(str(reason))

    def _closing(self, reason: str = "closed") -> None:
        was, self.state = self.state, "closed"
        if self._misc is not None and self._misc.running:
            self._misc.stop()
        if self._connack_timeout is not None and self._connack_timeout.active():
            self._connack_timeout.cancel()
        self._connack_timeout = None
        if was == "connected":
            self._call(self._handler.lost, reason)

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        self._call(self._handler.published, mid, str(reason) if reason.is_failure else None)

    def _on_message(self, client, userdata, message) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            return
        self._call(self._handler.message, topic, message.payload, bool(message.retain), message.mid)

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        refused = next((str(reason) for reason in reasons if reason.is_failure), None)
        self._call(self._handler.subscribed, mid, refused)

    def _call(self, method: Callable, *args) -> None:
        try:
            method(*args)
        except Exception:
            self._log.failure("Handling an MQTT event failed (a bug: please report it)")
