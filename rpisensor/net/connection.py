"""
The base of the server roles' connections: one place that decides when to
stop and start reading from a peer, how a connection closes after the work
in flight (also when the peer half-closes), and how long a TLS client may
take to prove who it is.
"""

from __future__ import annotations

import enum
import re

from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.net.peers import peer_text, plain_reason
from rpisensor.net.tls import requires_client_certificate


class Pause(enum.IntFlag):
    """Why a connection does not read from its peer; several may hold at once."""

    #: Our replies fill the socket buffer: the peer does not read them.
    WRITES = enum.auto()
    #: Too much work waits (replies, or messages on their way to disk).
    PENDING = enum.auto()
    #: Closing after the work in flight: no more bytes are read, but the
    #: messages already received are still handled.
    CLOSING = enum.auto()


#: The reasons that also hold back messages already received.
_HOLD_MESSAGES = Pause.WRITES | Pause.PENDING

#: The first line of an HTTP request (RFC 9112: method, target, version): what
#: a browser sends first, whatever a web page asks it to send.
_HTTP_REQUEST = re.compile(rb"[A-Z][A-Z-]{1,19} \S+ HTTP/[0-9]")
#: Bytes of a connection's first line looked at for it.
_FIRST_LINE = 256


@implementer(IHandshakeListener, IHalfCloseableProtocol)
class ServerConnection(NullTerminatedProtocol):
    """
    Base of the server roles' connections: logs arrivals and departures with
    the peer's address, pauses and resumes reading for any number of reasons
    (L{pause}, L{resume}), closes after the work in flight
    (L{closeAfterWork}), and on TLS listeners gives the client
    C{handshake_timeout} seconds to finish the handshake.

    A peer that half-closes (sends its FIN, as C{nc -N} does after its last
    command) still gets the replies to what it sent: C{readConnectionLost}
    closes after the work in flight. Twisted's TLS layer has no half-close:
    there the end of the peer's stream ends the connection.

    Subclasses say whether work is in flight (L{busy}) and call L{workDone}
    when some finishes.
    """

    _log = Logger()
    #: How the log calls the peer.
    peer_role = "Client"
    #: Whether the connection is over TLS (known at L{connectionMade}).
    tls = False
    tls_established = False
    #: Whether this TLS listener requires client certificates (C{--client-ca}).
    client_certificate_required = False
    #: The address this connection counts under for C{max_connections_per_host}
    #: (set by the factory; C{None}: not counted, a local client).
    counted_host: str | None = None
    #: True once the peer has gone: nothing more is done for it.
    gone = False
    #: Why reading is paused (no reason: reading).
    paused = Pause(0)
    _close_timer = None
    _handshake_timer = None
    _handshake_given_up = False
    #: Whether the first line is still to be checked for an HTTP request (L{_cross_protocol}).
    _first_line_pending = True
    #: When the message being received now began (its first byte); C{None} between messages.
    partial_since: float | None = None
    #: Seconds a closing connection may take to flush before it is aborted.
    CLOSE_GRACE = 10.0

    @property
    def closing(self) -> bool:
        """True once the connection only finishes its work in flight, then closes."""
        return bool(self.paused & Pause.CLOSING)

    def connectionMade(self) -> None:
        self.peer = peer_text(self.transport)
        clock = self.factory.clock
        self.last_heard = clock.seconds()
        self.factory.connection_opened(self)
        if ISSLTransport.providedBy(self.transport):
            self.tls = True
            self.client_certificate_required = requires_client_certificate(self.transport)
            self._handshake_timer = clock.callLater(
                self.factory.limits.handshake_timeout, self._handshake_too_slow
            )
        else:
            self._log_arrival()

    def _log_arrival(self) -> None:
        self.peer_log.info(
            "{role} connected from {peer}", key="connections", role=self.peer_role, peer=self.peer
        )

    def dataReceived(self, data: bytes) -> None:
        if data:  # (b"" is a replay of held messages, not the peer speaking)
            if self.paused and self.closing:  # (an enum's "and" costs: asked only when paused at all)
                return  # bytes after we decided to close are not read
            now = self.last_heard = self.factory.clock.seconds()
            if self._first_line_pending and self._cross_protocol(data):
                return
            # When the message now arriving began (see --message-timeout): none when the
            # data ends a message; now when it begins one after a NUL, or the first.
            if data.endswith(b"\0"):
                self.partial_since = None
            elif self.partial_since is None or b"\0" in data:
                self.partial_since = now
        super().dataReceived(data)

    def _cross_protocol(self, data: bytes) -> bool:
        """
        Whether the connection's first line is an HTTP request; if so, close it
        and say so. A browser sends one first, whatever a web page asks it to
        send (C{fetch()} to this port with C{"\\0set led on\\0"} as its body):
        closed at once, nothing it sent is a command (Redis does the same).
        """
        head = (self._buffer + data)[:_FIRST_LINE]
        end = next((i for i in (head.find(b"\n"), head.find(b"\0")) if i >= 0), len(head))
        line = head[:end]
        if end < len(head) or len(head) >= _FIRST_LINE:
            self._first_line_pending = False  # a whole first line (or message): decided now
        if not _HTTP_REQUEST.match(line):
            return False
        self._first_line_pending = False
        self.peer_log.warn(
            "Closed the connection from {peer}: it began with an HTTP request ({line!r}), not this "
            "server's protocol. A web page may be making a browser send commands here (a "
            "cross-protocol attack), or a browser was pointed at this port; the web page is on --web.",
            key="HTTP requests on the sensor port", peer=self.peer, line=line.rstrip(b"\r")[:80].decode("latin-1"),
        )  # fmt: skip
        self.pause(Pause.CLOSING)
        self.transport.abortConnection()
        return True

    # One API for flow control: every reason to stop reading goes through here.

    def pause(self, reason: Pause) -> None:
        """Stop reading for C{reason}, until L{resume} with the same reason."""
        if self.gone or self.paused & reason:
            return
        before = self.paused
        self.paused |= reason
        if not before:
            self.transport.pauseProducing()
        if reason & _HOLD_MESSAGES and not before & _HOLD_MESSAGES:
            self.pauseMessages()

    def resume(self, reason: Pause) -> None:
        """C{reason} no longer holds; read again if no other reason does."""
        if not (self.paused and self.paused & reason):
            return
        self.paused &= ~reason
        if self.gone:
            return  # a client that left gets no more work done for it
        if reason & Pause.PENDING:
            # The time the peer waited for us is not time it was idle, nor time its message took.
            self.last_heard = self.factory.clock.seconds()
            if self.partial_since is not None:
                self.partial_since = self.last_heard
        if not self.paused:
            self.transport.resumeProducing()
        if not self.paused & _HOLD_MESSAGES:
            self.resumeMessages()  # messages already received are handled, even when closing

    def messageTooLong(self, length: int) -> None:
        """Stop reading, answer what came before the long message, then close."""
        self.logTooLong(length)
        self.closeAfterWork()

    def closeAfterWork(self) -> None:
        """
        Read nothing more; close once the work in flight is done (L{busy} is
        false), or abort after C{CLOSE_GRACE} seconds, whichever comes first.
        """
        if self.closing or self.gone:
            return
        self.pause(Pause.CLOSING)
        self._close_timer = self.factory.clock.callLater(self.CLOSE_GRACE, self.transport.abortConnection)
        self.workDone()

    def workDone(self) -> None:
        """Subclasses call this when work in flight finished; closes if closing."""
        if self.closing and not self.busy and not self.holds_messages:
            self.transport.loseConnection()

    # Half-close (IHalfCloseableProtocol): only plain TCP and Unix sockets call these.

    def readConnectionLost(self) -> None:
        """
        The peer sent all it will send: handle the messages received (a
        partial one at the end is dropped), send their replies, then close.
        """
        self.closeAfterWork()

    def writeConnectionLost(self) -> None:
        """Nothing more can be sent to the peer: finish the work in flight, then close."""
        self.closeAfterWork()

    # TLS

    def handshakeCompleted(self) -> None:
        self.tls_established = True
        self._cancel(self._handshake_timer)
        self._log_arrival()

    def _handshake_too_slow(self) -> None:
        self._handshake_given_up = True
        self.peer_log.info(
            "Closing the connection from {peer}: no TLS handshake within {seconds:g} s "
            "(--handshake-timeout).",
            key="TLS handshakes too slow",
            peer=self.peer,
            seconds=self.factory.limits.handshake_timeout,
        )
        self.transport.abortConnection()

    def timeoutConnection(self) -> None:
        self.peer_log.info(
            "Closing the connection from {peer}: nothing received for {seconds:g} s (--idle-timeout).",
            key="idle connections closed",
            peer=self.peer,
            seconds=self.factory.limits.idle_timeout,
        )
        self.closeAfterWork()

    def messageTooSlow(self) -> None:
        """A message began C{message_timeout} seconds ago and has not ended: close, after the work in flight."""
        self.peer_log.info(
            "Closing the connection from {peer}: a message it began {seconds:g} s ago has not ended "
            "(no NUL; --message-timeout).",
            key="messages too slow", peer=self.peer, seconds=self.factory.limits.message_timeout,
        )  # fmt: skip
        self.closeAfterWork()

    def connectionLost(self, reason: Failure) -> None:
        self.gone = True
        self.paused |= Pause.CLOSING
        self._cancel(self._close_timer)
        self._cancel(self._handshake_timer)
        self.factory.connection_closed(self)
        super().connectionLost(reason)
        if self.tls and not self.tls_established:
            if not self._handshake_given_up:  # (that was logged when giving up)
                self._log_failed_handshake(reason)
        else:
            self.peer_log.info(
                "{role} {peer} disconnected", key="disconnections", role=self.peer_role, peer=self.peer
            )

    def _log_failed_handshake(self, reason: Failure) -> None:
        """Say why a TLS client never got in, and what to check, without blaming what is not set."""
        if type(reason.value).__module__ == "OpenSSL.SSL":
            if self.client_certificate_required:
                advice = (
                    "The client may lack a certificate signed by a CA in --client-ca, or may "
                    "not trust this server's certificate."
                )
            else:
                advice = (
                    "The client may not trust this server's certificate, or may not speak TLS "
                    "(a plain TCP client on an ssl: listener)."
                )
            self.peer_log.warn(
                "Refused {peer}: the TLS handshake failed ({reason}). {advice}",
                key="failed TLS handshakes",
                peer=self.peer,
                reason=plain_reason(reason),
                advice=advice,
            )
        else:
            self.peer_log.info(
                "The connection from {peer} ended before its TLS handshake finished ({reason}).",
                key="connections ended before the TLS handshake",
                peer=self.peer,
                reason=plain_reason(reason),
            )

    @staticmethod
    def _cancel(timer) -> None:
        if timer is not None and timer.active():
            timer.cancel()

    @property
    def busy(self) -> bool:
        """Whether work for this connection is still in flight (see L{AdmittingFactory.drain})."""
        return False
