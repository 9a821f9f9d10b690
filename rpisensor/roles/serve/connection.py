"""
One client of C{serve}: each command gets exactly one reply, in order; a
client that subscribes (protocol v2) gets the journal's stream instead.
"""

from __future__ import annotations

from collections import deque
from functools import partial

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor import wire
from rpisensor.net.connection import Pause, ServerConnection
from rpisensor.net.direct import direct_socket, write_now
from rpisensor.sensing.sample import InputLevel

if TYPE_CHECKING:
    from rpisensor.roles.serve.subscription import Subscription


#: The reply to a message with a line break inside (CR or LF around it is fine).
LINE_BREAK_REFUSAL = (
    "error: a line break (CR or LF) inside a message is refused: send one command a message, "
    "each ended by a NUL byte"
)


def _line_break_inside(text: str) -> bool:
    """
    Whether C{text} has CR or LF inside it, not just around it. Lines are HTTP's
    (or SMTP's...) framing, never this protocol's: such a message is what a browser
    or another protocol's client sends, not one command.
    """
    body = text.strip()
    return "\n" in body or "\r" in body


@implementer(IPushProducer)
class SensorServerProtocol(ServerConnection):
    """
    One client connection. Each command gets exactly one reply message, in
    the order the commands arrived, even when a later command (C{ping}) is
    ready before an earlier one (a slow C{go}). Empty messages are ignored.

    Reading from the client pauses while its unsent replies fill the socket
    buffer (a client that never reads) or while C{max_pending} commands wait
    for their replies (until half of them are answered), so one client cannot
    make the server buffer without bound.

    The replies known while one segment of the client's bytes is handled
    (C{go} on an edge-tracked input, C{ping}, errors) leave together when it
    has been handled, in one C{send} straight to the socket when Twisted
    holds nothing unsent for the connection (see L{rpisensor.net.direct}):
    no second turn of the reactor per reply. Replies that come later (a
    read, a Deferred, the stream) go through the transport's buffer, which
    gathers what one turn of the reactor writes.

    @ivar granted: the permissions of this client (see L{Permission}).
    """

    _log = Logger()

    # One slot per command waiting for its reply, in arrival order: a one-item
    # list holding the reply's wire bytes once known; created on first need,
    # as most connections never have one waiting (memory per idle client).
    _replies: deque[list[bytes | None]] | None = None
    #: The v2 session, once the client sent hello or subscribe.
    subscription: Subscription | None = None
    #: The rate limit of its control commands (C{--control-rate}), made at its first one.
    control_bucket = None
    #: The socket replies may be sent on directly (L{direct_socket}), or C{None}.
    _socket = None
    #: While a segment is handled: the replies it got at once, sent together after it.
    _gathered: list[bytes] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.granted = self.factory.permissions_for(self.transport)
        self.transport.registerProducer(self, True)
        self._socket = direct_socket(self.transport)

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        # The client's certificate is known now: it may grant control (--control-cert).
        self.granted = self.factory.permissions_for(self.transport)

    _certificate: str | None = None

    def _named(self, address: str) -> str:
        """C{address}, and the client's certificate's CN once its TLS handshake is done."""
        if not self.tls_established:
            return address
        if self._certificate is None:
            from rpisensor.net.tls import certificate_name

            self._certificate = certificate_name(self.transport) or ""
        return f"{address} (certificate {self._certificate})" if self._certificate else address

    @property
    def who(self) -> str:
        """The client as control replies and log lines name it: its address, and its certificate's CN."""
        return self._named(self.peer)

    @property
    def sender(self) -> str:
        """Who the client is for the control log, whatever its port: its IP address, and its certificate's CN."""
        return self._named(getattr(self.transport.getPeer(), "host", None) or self.peer)

    @property
    def busy(self) -> bool:
        return bool(self._replies)

    def dataReceived(self, data: bytes) -> None:
        if data and self.subscription is not None:
            self.subscription.heard()
        if self._gathered is not None:
            # Called again from within this segment (a reply let held messages through,
            # resumeMessages): their replies join this segment's batch.
            super().dataReceived(data)
            return
        self._gathered = gathered = []
        try:
            super().dataReceived(data)
        finally:
            self._gathered = None
            if gathered:
                write_now(self.transport, self._socket, b"".join(gathered))

    def _write(self, data: bytes) -> None:
        """Send reply bytes after those before them: with the segment's batch, or through the transport."""
        gathered = self._gathered
        if gathered is not None:
            gathered.append(data)
        else:
            self.transport.write(data)

    def workDone(self) -> None:
        gathered = self._gathered
        if gathered and self.closing:  # what the segment has answered leaves before the close
            write_now(self.transport, self._socket, b"".join(gathered))
            gathered.clear()
        super().workDone()

    def messageReceived(self, text: str) -> None:
        subscription = self.subscription
        if subscription is not None and subscription.subscribed:
            subscription.receive(text)
            return
        if text == "go":  # the tutorial's command, as it sends it: the hot path
            self.reply_with_reading(self.factory.reader.first.name)
            return
        verb, args = wire.parse_command(text)
        if not verb:
            return
        command = self.factory.commands.get(verb)
        if command is not None and ("\n" in text or "\r" in text) and _line_break_inside(text):
            self.reply(LINE_BREAK_REFUSAL)
            return
        if command is not None and command.raw and command.permission in self.granted:
            rest = text.strip().split(None, 1)
            command.handler(self, [rest[1] if len(rest) > 1 else ""])
            return
        if command is None:
            self._log.debug("Unknown command {verb!r} from {peer}", verb=verb, peer=self.peer)
            self.reply(f"error: unknown command {verb!r}; send 'help' for the list")
        elif command.permission not in self.granted:
            self.reply(self.factory.refusal(self, command))
        elif not command.arguments[0] <= len(args) <= command.arguments[1]:
            self.reply(command.usage_error())
        else:
            command.handler(self, args)

    def invalidMessageReceived(self, body: bytes, error: wire.MessageError) -> None:
        super().invalidMessageReceived(body, error)
        self.reply(f"error: {error}")

    def reply(self, text: str) -> None:
        """Send a reply that is known now, or queue it behind replies still pending."""
        if self._replies:
            self._replies.append([wire.frame(text)])
            self._send_ready_replies()
            if len(self._replies) >= self.factory.limits.max_pending:
                self.pause(Pause.PENDING)
        elif not self.transport.disconnecting:
            self._write(wire.frame(text))
            if self.subscription is not None:
                self.subscription.wrote()

    def reply_all(self, texts: list[str]) -> None:
        """Send several messages known now (a stream's batch) in one write, after any pending reply."""
        self._reply_bytes(b"".join([wire.frame(text) for text in texts]))

    def reply_with_reading(self, name: str) -> None:
        """
        Queue a reply that is input C{name}'s reading: at once when the GPIO
        driver reports its every change (L{InputState}), else once it is read.
        """
        state = self.factory.state
        if state is not None:
            known = state.known(name)
            if known is not None:
                self._reply_bytes(self.factory.frame_for(known))
                return
        slot: list[bytes | None] = [None]
        if self._replies is None:
            self._replies = deque()
        self._replies.append(slot)
        self.factory.reader.when_read(name, partial(self._reading_ready, slot))
        if slot[0] is None and len(self._replies) >= self.factory.limits.max_pending:
            self.pause(Pause.PENDING)

    def _reply_bytes(self, data: bytes) -> None:
        if self._replies:
            self._replies.append([data])
            self._send_ready_replies()
        elif not self.transport.disconnecting:
            self._write(data)

    def reply_when(self, answer: Deferred[str]) -> None:
        """Queue a reply that C{answer} gives (an C{error:} reply if it fails)."""
        slot: list[bytes | None] = [None]
        if self._replies is None:
            self._replies = deque()
        self._replies.append(slot)
        answer.addCallbacks(
            lambda text: wire.frame(text),
            lambda failure: wire.frame(f"error: {failure.getErrorMessage()}"),
        ).addCallback(self._answer_ready, slot)

    def _answer_ready(self, data: bytes, slot: list[bytes | None]) -> None:
        slot[0] = data
        self._send_ready_replies()

    def _reading_ready(self, slot: list[bytes | None], outcome: InputLevel | Failure) -> None:
        if isinstance(outcome, Failure):
            # The reader logs a failing or hung sensor once; the client is told in its reply.
            slot[0] = wire.frame(f"error: reading failed: {outcome.getErrorMessage()}")
        else:
            slot[0] = self.factory.frame_for(outcome)
        self._send_ready_replies()

    def _send_ready_replies(self) -> None:
        replies = self._replies
        if not replies or replies[0][0] is None:
            return
        ready = []
        while replies and replies[0][0] is not None:
            ready.append(replies.popleft()[0])
        if not self.transport.disconnecting:
            self._write(b"".join(ready))
            if self.subscription is not None:
                self.subscription.wrote()
        if len(replies) <= self.factory.limits.max_pending // 2:
            self.resume(Pause.PENDING)
        if not replies:
            self.workDone()

    # As a producer of replies, the transport pauses us when its buffer is
    # full; we then stop reading commands.

    # A subscription pauses with them: the stream waits for the subscriber to read.

    def pauseProducing(self) -> None:
        self.pause(Pause.WRITES)
        if self.subscription is not None and not self.gone:
            self.subscription.pause()

    def resumeProducing(self) -> None:
        self.resume(Pause.WRITES)
        if self.subscription is not None and not self.gone:
            self.subscription.resume()

    def stopProducing(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        if self.subscription is not None:
            self.subscription.stop()
        if self.factory.controller is not None:
            self.factory.controller.connection_lost(self)  # its deadman outputs go safe now
        super().connectionLost(reason)
