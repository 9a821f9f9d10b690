"""
A reporter's stream on the collector: its hello is checked and its stream
opened (where it stands in the store, and whose it is: the first sender to
claim it), then it is welcomed with the position and its digest, or refused
with a C{refused} frame; after that a L{StreamLink} with a L{Receiver} takes
every frame (see L{rpisensor.stream.link}). A malformed frame gets one
C{error: ...} line and the connection stays, unless the sequence broke.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.net.connection import Pause
from rpisensor.net.nodelay import send_at_once
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT
from rpisensor.stream.heartbeat import interval_for
from rpisensor.stream.link import StreamLink
from rpisensor.stream.receiver import Receiver, Refusal, owner_tag
from rpisensor.wire import v2

#: The heartbeat interval when a reporter's hello names none: the one a
#: client with the default --dead-peer-timeout announces.
DEFAULT_HEARTBEAT = interval_for(DEFAULT_DEAD_PEER_TIMEOUT)
#: Messages a reporter may send before it was welcomed (a sender waits for the welcome).
MAX_EARLY_MESSAGES = 100


def check_hello(text: str, identity: str | None, certificate_required: bool) -> v2.Hello:
    """
    The reporter's hello in C{text}, checked.

    @param identity: the CN of the client's certificate.
    @param certificate_required: the listener requires client certificates
        (C{--client-ca}): the hello's device must then be the certificate's CN.
    @raise v2.FrameError: the hello is malformed.
    @raise Refusal: it is well formed but not for a collector, or not this client's device.
    """
    hello = v2.parse(text)
    if not isinstance(hello, v2.Hello):
        raise v2.FrameError(f"expected a hello, got {text.split(' ', 1)[0][:32]!r}")
    if hello.role != "report":
        raise Refusal(
            f"this is a collector: it takes reporters (hello role 'report'), not {hello.role!r}; "
            "to follow a Pi's readings, subscribe to its serve"
        )
    if certificate_required:
        if identity is None:
            raise Refusal(f"device {hello.device!r} cannot be checked: your certificate has no CN")
        if hello.device != identity:
            raise Refusal(f"device {hello.device!r} does not match your certificate (CN={identity})")
    return hello


class ReportSession:
    """
    The stream side of one L{rpisensor.roles.collect.collector.CollectorProtocol}.

    @param connection: the protocol: its C{sendMessage}, C{transport}, C{peer},
        C{pause}/C{resume}, C{factory} (C{registry}, C{delivery}, C{clock},
        C{stamp}, C{stream_log}, C{store}).
    """

    _log = Logger(namespace="rpisensor.roles.collect")

    def __init__(self, connection, hello: v2.Hello, identity: str | None) -> None:
        self.connection = connection
        self.hello = hello
        self.identity = identity
        self.ended = False
        self.link: StreamLink | None = None
        self.receiver: Receiver | None = None
        #: What the reporter sent before it was welcomed, said again once it is.
        self._early: list[str] = []
        connection.pause(Pause.PENDING)  # nothing more is read until the stream is open
        certificate = identity if connection.client_certificate_required else None
        opening = connection.factory.registry.open(hello.device, hello.stream, owner_tag(hello.owner, certificate))
        Deferred.fromCoroutine(opening).addCallbacks(self._opened, self._not_opened)

    # -- opening ------------------------------------------------------------------------------

    def _opened(self, state) -> None:
        connection = self.connection
        if self.ended:
            return
        factory = connection.factory
        hello = self.hello
        interval = hello.heartbeat if hello.heartbeat is not None else DEFAULT_HEARTBEAT
        link = self.link = StreamLink(connection.sendMessage, factory.clock, interval, self._dead, self._problem,
                                      self._error)  # fmt: skip
        store = factory.store
        self.receiver = Receiver(
            factory.registry, state, self._deliver, link.send, self._close, factory.clock, factory.stamp,
            connection.peer, hello.last, self.identity, factory.stream_log,
            entry_at=None if store is None else lambda seq: store.entry(hello.device, hello.stream, seq),
        )  # fmt: skip
        link.attach(self.receiver)
        send_at_once(connection.transport)  # acks go out at once, not after the reporter's delayed ACK
        shown = int(interval) if float(interval).is_integer() else interval  # 10, not 10.0
        link.send(v2.encode(v2.Welcome(acked=state.stored, heartbeat=shown, digest=state.digest)))
        early, self._early = self._early, []
        self.hold()
        try:
            for text in early:
                self.message(text)
        finally:
            self.flush()
        connection.resume(Pause.PENDING)

    def _not_opened(self, failure: Failure) -> None:
        connection = self.connection
        if self.ended:
            return
        if failure.check(Refusal):
            self.refuse(failure.getErrorMessage())
            return
        connection.peer_log.error(
            "Cannot tell where stream {stream} of {device} stands in the store ({error}); closed the "
            "connection of {peer}, which tries again later. Check the store (is the database up?).",
            key="stream positions unknown", stream=self.hello.stream, device=self.hello.device,
            error=failure.getErrorMessage(), peer=connection.peer,
        )  # fmt: skip
        self.end()
        connection.transport.loseConnection()

    def refuse(self, reason: str) -> None:
        """Say why this stream is not taken, in a C{refused} frame, and close: the reporter backs off."""
        connection = self.connection
        connection.peer_log.warn(
            "Refused the stream of {peer}: {reason}", key="refused streams", peer=connection.peer, reason=reason
        )
        connection.sendMessage(v2.encode(v2.Refused(reason)))
        self.end()
        # (Not closeAfterWork: it stops reading, and a TLS close waits to read the peer's close_notify.)
        connection.transport.loseConnection()

    # -- the stream -------------------------------------------------------------------------------

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
        if self.receiver is not None:
            self.receiver.hold()

    def flush(self) -> None:
        if self.receiver is not None:
            self.receiver.flush()

    def heard(self) -> None:
        if self.link is not None:
            self.link.heard()

    def message(self, text: str) -> None:
        """One message from the reporter."""
        if self.link is None:
            if len(self._early) >= MAX_EARLY_MESSAGES:
                self._close(f"error: more than {MAX_EARLY_MESSAGES} messages before the welcome")
                return
            self._early.append(text)
            return
        self.link.message(text)
        receiver, connection = self.receiver, self.connection
        if receiver.pending and len(receiver.pending) + connection.unstored >= connection.pending_limit:
            receiver.flush()  # the bound is met now, as without holding: stop reading
            receiver.hold()

    def _problem(self, what: str) -> None:
        self.connection.peer_log.warn(
            "Reporter {peer} sent a frame this collector cannot use: {problem}. It was told so "
            "(error: ...), and the connection kept.",
            key="malformed v2 frames", peer=self.connection.peer, problem=what,
        )  # fmt: skip
        self.link.send(f"error: {what}")

    def _error(self, text: str) -> None:
        self.connection.peer_log.warn(
            "Reporter {peer} said {text!r}.", key="reporter errors", peer=self.connection.peer, text=text[:200]
        )

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
        if self.link is not None:
            self.link.send(reason)
        else:
            connection.sendMessage(reason)
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
            if self.link is not None:
                self.link.quiet()

    def connection_lost(self) -> None:
        self.end()
        if self.link is not None:
            self.link.stop()
