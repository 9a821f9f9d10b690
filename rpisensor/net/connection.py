"""
The base of the server roles' connections: one place that decides when to
stop and start reading from a peer, and how a connection closes after the
work in flight.
"""

from __future__ import annotations

import enum

from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.net.peers import peer_text


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


@implementer(IHandshakeListener)
class ServerConnection(NullTerminatedProtocol):
    """
    Base of the server roles' connections: logs arrivals and departures with
    the peer's address, pauses and resumes reading for any number of reasons
    (L{pause}, L{resume}), closes after the work in flight
    (L{closeAfterWork}), and says when a TLS client was refused during the
    handshake.

    Subclasses say whether work is in flight (L{busy}) and call L{workDone}
    when some finishes.
    """

    _log = Logger()
    #: How the log calls the peer.
    peer_role = "Client"
    tls_established = False
    #: True once the peer has gone: nothing more is done for it.
    gone = False
    #: Why reading is paused (no reason: reading).
    paused = Pause(0)
    _close_timer = None
    #: Seconds a closing connection may take to flush before it is aborted.
    CLOSE_GRACE = 10.0

    @property
    def closing(self) -> bool:
        """True once the connection only finishes its work in flight, then closes."""
        return bool(self.paused & Pause.CLOSING)

    def connectionMade(self) -> None:
        self.peer = peer_text(self.transport)
        self.last_heard = self.factory.clock.seconds()
        self.factory.connection_opened(self)
        self._log.info("{role} connected from {peer}", role=self.peer_role, peer=self.peer)

    def dataReceived(self, data: bytes) -> None:
        if data:  # (b"" is a replay of held messages, not the peer speaking)
            if self.closing:
                return  # bytes after we decided to close are not read
            self.last_heard = self.factory.clock.seconds()
        super().dataReceived(data)

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
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if self.gone:
            return  # a client that left gets no more work done for it
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
        if self.closing and not self.busy and not (self._held and self._buffer):
            self.transport.loseConnection()

    def handshakeCompleted(self) -> None:
        self.tls_established = True

    def timeoutConnection(self) -> None:
        self._log.info(
            "Closing the connection from {peer}: nothing received for {seconds} s "
            "(--idle-timeout).",
            peer=self.peer,
            seconds=self.factory.limits.idle_timeout,
        )
        self.closeAfterWork()

    def connectionLost(self, reason: Failure) -> None:
        self.gone = True
        self.paused |= Pause.CLOSING
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self.factory.connection_closed(self)
        if ISSLTransport.providedBy(self.transport) and not self.tls_established:
            self._log.warn(
                "Refused {peer}: the TLS handshake failed ({reason}). The client may lack a "
                "certificate signed by --client-ca, or may not trust this server's certificate.",
                peer=self.peer,
                reason=reason.getErrorMessage(),
            )
        else:
            self._log.info("{role} {peer} disconnected", role=self.peer_role, peer=self.peer)

    @property
    def busy(self) -> bool:
        """Whether work for this connection is still in flight (see L{AdmittingFactory.drain})."""
        return False
