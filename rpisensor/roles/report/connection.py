"""
The reporter's connection: it offers v2 with a hello, then streams through
an L{Uplink} or speaks plain text, as its L{Reporter} decides; it is its
transport's producer, so a server that stops reading pauses the sending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.net.peers import peer_text
from rpisensor.net.request import ClientConnection
from rpisensor.net.wording import NamedLogger
from rpisensor.stream.handshake import Handshake
from rpisensor.stream.uplink import Uplink
from rpisensor.wire import v2

if TYPE_CHECKING:
    from rpisensor.roles.report.reporter import Reporter

@implementer(IPushProducer)
class ReportProtocol(ClientConnection):
    """
    The reporter's connection. It is the producer of its transport, so that a
    server that stops reading pauses the sending rather than filling buffers.

    @ivar mode: C{"hello"} while waiting for the welcome, then C{"2"} (a
        stream, through L{uplink}) or C{"1"} (plain text).
    """

    _log = NamedLogger("rpisensor.report")

    #: Whether the transport asked us to stop sending.
    paused = False
    _producing = False
    mode: str | None = None
    handshake: Handshake | None = None
    uplink: Uplink | None = None
    _server_error: str | None = None
    _refusal: str | None = None

    # The reconnecting client backs off after a connection that ends with
    # parting_error set (a server's refusal). A server this side leaves (not
    # v2 under --protocol 2, a broken welcome) is a refusal as well, so
    # parting_error also holds ours, until the base class logs the end: its
    # line is about what the server said.
    @property
    def parting_error(self) -> str | None:
        return self._server_error if self._server_error is not None else self._refusal

    @parting_error.setter
    def parting_error(self, text: str | None) -> None:
        self._server_error = text

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.registerProducer(self, True)
        self._producing = True
        self.factory.reporter.attach(self)

    def dataReceived(self, data: bytes) -> None:
        if data and self.uplink is not None:
            self.uplink.heard()
        super().dataReceived(data)

    def messageFromServer(self, text: str) -> None:
        if self.mode == "hello" and self.handshake.received(text):
            return
        if self.mode == "2":
            try:
                if self.uplink.received(text):
                    return
            except v2.FrameError as e:
                self.peer_log.warn(
                    "{peer} sent a frame this reporter cannot read ({error}); ignored.",
                    peer=peer_text(self.transport), error=str(e),
                )  # fmt: skip
                return
        self.peer_log.info("Message from {peer}: {text}", peer=peer_text(self.transport), text=text)

    def give_up(self, format: str, **fields) -> None:
        """Leave this server, saying why; the next attempt comes after a backoff."""
        self.peer_log.warn(format, **fields)
        self._refusal = "(left by this reporter)"
        self.transport.loseConnection()

    def peer_dead(self, seconds: float) -> None:
        """The heartbeat heard nothing for C{seconds}: drop the link, reconnect."""
        self.peer_log.warn(
            "Nothing from {peer} for {seconds:g} s, not even a heartbeat: the link looks dead "
            "(--dead-peer-timeout); reconnecting.",
            peer=peer_text(self.transport), seconds=seconds,
        )  # fmt: skip
        self.transport.abortConnection()

    def pauseProducing(self) -> None:
        if self.paused:
            return
        self.paused = True
        if self.uplink is not None:
            self.uplink.pause()
            self.peer_log.info(
                "{peer} is not taking data for now; sampling goes on into the outbox, and sending "
                "goes on from there when it takes data again.",
                peer=peer_text(self.transport),
            )
        else:
            self.peer_log.info(
                "{peer} is not taking data for now; sampling goes on, and the latest state "
                "goes when it takes data again.",
                peer=peer_text(self.transport),
            )

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            if self.uplink is not None:
                self.uplink.resume()
            self.factory.reporter.resumed(self)

    def stopProducing(self) -> None:
        pass  # the connection is ending: connectionLost detaches

    def stop_being_producer(self) -> None:
        """
        Unregister from the transport: nothing more will be sent. A TLS
        transport closes only once its producer is gone, so do this before
        closing the connection.
        """
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        if self.uplink is not None:
            self.uplink.pause()

    def connectionLost(self, reason: Failure) -> None:
        self._producing = False  # the transport let go of its producer
        self._refusal = None  # (the reconnecting client has read it by now)
        if self.handshake is not None:
            self.handshake.stop()
        if self.uplink is not None:
            self.uplink.stop()
        self.factory.reporter.detach(self)
        super().connectionLost(reason)


class ReportFactory(Factory):
    protocol = ReportProtocol
    noisy = False

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.clock = reporter.clock
