"""
A reporter's v2 session on the collector: after its C{hello}, the entries of
its stream are checked for order, stored, and acknowledged once durable (see
L{rpisensor.stream.receiver}); heartbeats go both ways; a malformed frame
gets one C{error: ...} line and the connection stays, unless the sequence
broke.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.net.nodelay import send_at_once
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT
from rpisensor.stream.heartbeat import Heartbeat, interval_for
from rpisensor.stream.receiver import StreamReceiver
from rpisensor.wire import v2

#: The heartbeat interval when a reporter's hello names none: the one a
#: client with the default --dead-peer-timeout announces.
DEFAULT_HEARTBEAT = interval_for(DEFAULT_DEAD_PEER_TIMEOUT)


class HelloRefused(ValueError):
    """A hello this collector will not take; the message is the C{error:} line's text."""


def check_hello(text: str, identity: str | None, certificate_required: bool) -> v2.Hello:
    """
    The reporter's hello in C{text}, checked.

    @param identity: the CN of the client's certificate.
    @param certificate_required: the listener requires client certificates
        (C{--client-ca}): the hello's device must then be the certificate's CN.
    @raise v2.FrameError: the hello is malformed.
    @raise HelloRefused: it is well formed but not for a collector, or not
        this client's device.
    """
    hello = v2.parse(text)
    if hello.role != "report":
        raise HelloRefused(
            f"this is a collector: it takes reporters (hello role 'report'), not {hello.role!r}; "
            "to follow a Pi's readings, subscribe to its serve"
        )
    if certificate_required:
        if identity is None:
            raise HelloRefused(f"device {hello.device!r} cannot be checked: your certificate has no CN")
        if hello.device != identity:
            raise HelloRefused(f"device {hello.device!r} does not match your certificate (CN={identity})")
    return hello


class ReportSession:
    """
    The v2 side of one L{rpisensor.roles.collect.collector.CollectorProtocol}.

    @param connection: the protocol: its C{sendMessage}, C{transport}, C{peer},
        C{factory} (C{registry}, C{delivery}, C{clock}, C{stream_log},
        C{peer_log}).
    """

    _log = Logger(namespace="rpisensor.roles.collect")

    def __init__(self, connection, hello: v2.Hello, identity: str | None) -> None:
        self.connection = connection
        factory = connection.factory
        self.identity = identity
        self.ended = False
        interval = hello.heartbeat if hello.heartbeat is not None else DEFAULT_HEARTBEAT
        self.heartbeat = Heartbeat(factory.clock, interval, self.send, self._dead)
        self.receiver = StreamReceiver(
            factory.registry, hello, None, self.send, self._close, factory.clock,
            factory.stamp, connection.peer, identity, factory.stream_log, store_batch=self._deliver,
        )  # fmt: skip
        send_at_once(connection.transport)  # acks go out at once, not after the reporter's delayed ACK
        welcome = self.receiver.welcome()
        shown = int(interval) if float(interval).is_integer() else interval  # 10, not 10.0
        self.send(v2.encode(v2.Welcome(acked=welcome.acked, heartbeat=shown)))

    def _deliver(self, records: list):
        connection = self.connection
        connection.entry_taken(len(records))
        return connection.factory.delivery.many(records).addBoth(self._delivered, records)

    def _delivered(self, result, records: list):
        if not isinstance(result, Failure):
            self.connection.factory.show_all(records)
        return self.connection.entry_done(result, len(records))

    def hold(self) -> None:
        """The entries of the messages from now on go to the store together, at L{flush}."""
        self.receiver.hold()

    def flush(self) -> None:
        self.receiver.flush()

    def send(self, text: str) -> None:
        if self.ended:
            return
        self.connection.sendMessage(text)
        self.heartbeat.sent()

    def heard(self) -> None:
        self.heartbeat.heard()

    def message(self, text: str) -> None:
        """One message from the reporter."""
        try:
            frame = v2.parse(text)
        except v2.FrameError as e:
            self._problem(str(e))
            return
        if isinstance(frame, (v2.Reading, v2.Gap)):
            receiver = self.receiver
            receiver.receive(frame)
            connection = self.connection
            if receiver.pending and len(receiver.pending) + connection.unstored >= connection.pending_limit:
                receiver.flush()  # the bound is met now, as without holding: stop reading
                receiver.hold()
        elif not isinstance(frame, v2.Heartbeat):
            verb = text.split(" ", 1)[0]
            self._problem(f"a reporter sends reading, gap and heartbeat frames here, not {verb}")

    def _problem(self, what: str) -> None:
        self.connection.peer_log.warn(
            "Reporter {peer} sent a frame this collector cannot use: {problem}. It was told so "
            "(error: ...), and the connection kept.",
            key="malformed v2 frames", peer=self.connection.peer, problem=what,
        )  # fmt: skip
        self.send(f"error: {what}")

    def _close(self, reason: str) -> None:
        """The receiver ends the session: say why, then close."""
        connection = self.connection
        if "could not store" in reason:
            connection.peer_log.error(
                "Could not store the stream of {peer}: {reason}. Check the disk and the store file; "
                "the reporter keeps the readings and sends them again.",
                key="stream store failures", peer=connection.peer, reason=reason,
            )  # fmt: skip
        else:
            connection.peer_log.warn(
                "Closing the stream from {peer}: {reason}", key="streams closed", peer=connection.peer,
                reason=reason,
            )  # fmt: skip
        self.send(reason)
        self.end()
        connection.transport.loseConnection()

    def _dead(self, seconds: float) -> None:
        connection = self.connection
        connection.peer_log.warn(
            "Nothing from reporter {peer} for {seconds:g} s (3 heartbeats): the link looks dead; "
            "closing it. The reporter sends what was not acknowledged when it reconnects.",
            key="dead reporters", peer=connection.peer, seconds=seconds,
        )  # fmt: skip
        self.end()
        connection.transport.abortConnection()

    def end(self) -> None:
        """Send nothing more (the connection is closing or gone)."""
        if not self.ended:
            self.ended = True
            self.heartbeat.stop()

    def connection_lost(self) -> None:
        self.end()
        self.receiver.connection_lost()
