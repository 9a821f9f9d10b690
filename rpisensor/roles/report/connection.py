"""
The reporter's connection: it offers the event stream with a C{hello}, then
streams the outbox through a L{StreamLink} with a L{Sender} once a collector
welcomes it, or speaks the tutorial's plain text (a L{PlainPusher}) to a
server that does not answer the hello. It is its transport's producer, so a
server that stops reading pauses the sending.

Negotiation costs the tutorial nothing: readings taken while the hello waits
for its answer are sent, in order, in whichever way wins (from the outbox to
a collector, as texts to a plain-text server); a plain-text server sees one
C{hello ...} line. A welcome that comes late (a collector slow to answer)
still turns the connection to the stream: plain text acknowledges nothing, so
nothing was let go meanwhile. A collector that will not take the stream says
so with C{refused}: that is no sign of a plain-text server, and the reporter
backs off and tries again later.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.net.nodelay import send_at_once
from rpisensor.net.peers import peer_text
from rpisensor.net.request import ClientConnection
from rpisensor.net.wording import NamedLogger
from rpisensor.roles.report.plain import PlainPusher
from rpisensor.stream.link import StreamLink
from rpisensor.stream.sender import REPORT, Position, Sender
from rpisensor.wire import v2

#: How an rpisensor server turns a client away (not allowed, too busy) before
#: it reads anything: said to every client, so not an answer to the hello.
REFUSALS = ("error: refused", "error: busy")
#: What the log says (once, until a collector welcomes the reporter) when a server gets plain text.
PLAIN_TEXT = (
    "so it gets plain text (the tutorial's DataServer3?). Plain text is not acknowledged: the outbox "
    "keeps every reading until a collector stores it"
)


@implementer(IPushProducer)
class ReportProtocol(ClientConnection):
    """
    The reporter's connection (its factory's C{reporter} is a
    L{rpisensor.roles.report.reporter.Reporter}).

    @ivar mode: C{"hello"} while the hello waits for its answer, then C{"2"}
        (the stream, through L{link}) or C{"1"} (plain text, through L{plain}).
    """

    _log = NamedLogger("rpisensor.report")

    #: Whether the transport asked us to stop sending.
    paused = False
    _producing = False
    mode: str | None = None
    link: StreamLink | None = None
    plain: PlainPusher | None = None
    hello: v2.Hello | None = None
    _hello_timer = None
    _server_error: str | None = None
    _refusal: str | None = None

    # The reconnecting client backs off after a connection that ends with
    # parting_error set (a server's refusal). A server this side leaves (not
    # v2 under --protocol 2, a refused stream) is a refusal as well, so
    # parting_error also holds ours, until the base class logs the end: its
    # line is about what the server said.
    @property
    def parting_error(self) -> str | None:
        return self._server_error if self._server_error is not None else self._refusal

    @parting_error.setter
    def parting_error(self, text: str | None) -> None:
        self._server_error = text

    @property
    def reporter(self):
        return self.factory.reporter

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.registerProducer(self, True)
        self._producing = True
        reporter = self.reporter
        reporter.connection = self
        settings = reporter.stream
        if settings.protocol != "2":
            self.plain = PlainPusher(self._send_text, reporter.latest)
            reporter.add_text_listener(self.plain.text)
        if settings.protocol == "1":
            self._speak_plain()
            return
        journal = reporter.outbox.journal
        self.mode = "hello"
        self.hello = v2.Hello(
            "report", settings.device, journal.stream, settings.heartbeat, journal.last, owner=journal.secret,
            incarnation=journal.incarnation,
        )  # fmt: skip
        self.sendMessage(v2.encode(self.hello))
        self._hello_timer = self.clock.callLater(settings.hello_timeout, self._no_answer)

    # -- negotiation ---------------------------------------------------------------------------

    def messageFromServer(self, text: str) -> None:
        if self.mode == "2":
            self.link.message(text)
            return
        verb = text.split(" ", 1)[0]
        if self.hello is not None and verb == "welcome":
            self._welcomed(text)
        elif self.hello is not None and verb == "refused":
            self._refused(text)
        elif self.mode == "hello" and text.startswith("error:") and not text.startswith(REFUSALS):
            self._not_v2(f"it answered our hello with {text!r}")
        elif self.mode == "1" and text.startswith("error:"):
            self.peer_log.warn("{where} said {text!r}.", key="server errors", where=self._where(), text=text[:200])
        else:
            self.peer_log.info("Message from {peer}: {text}", peer=self._where(), text=text)

    def _send_text(self, text: str) -> None:
        if self.transport.disconnecting:
            self.stop_being_producer()  # closed by someone else: let a TLS close finish
            return
        self.sendMessage(text)

    def _no_answer(self) -> None:
        self._hello_timer = None
        self._not_v2(f"it did not answer our hello within {self.reporter.stream.hello_timeout:g} s")

    def _not_v2(self, why: str) -> None:
        self._cancel_hello_timer()
        if self.reporter.stream.protocol == "2":
            self.give_up(
                "{where} does not speak rpisensor v2: {why}. With --protocol 2 no plain text is sent; "
                "trying again later.",
                where=self._where(), why=why,
            )  # fmt: skip
            return
        reporter = self.reporter
        if reporter.mode_told != "1":
            reporter.mode_told = "1"
            self.peer_log.warn("{where}: {why}, {what}.", where=self._where(), why=why, what=PLAIN_TEXT)
        self._speak_plain()

    def _speak_plain(self) -> None:
        """Plain text from now on: the texts taken meanwhile go first, or the current state."""
        self.mode = "1"
        if self.paused:
            self.plain.pause()
        self.plain.start()
        if not self.reporter.latest:
            self.reporter.sample()  # nothing read yet: its texts come through the listener

    def _welcomed(self, text: str) -> None:
        self._cancel_hello_timer()
        where = self._where()
        try:
            welcome = v2.parse(text)
        except v2.FrameError as e:
            self.give_up(
                "{where} answered our hello with a welcome this reporter cannot read ({error}); trying "
                "again later.",
                where=where, error=str(e),
            )  # fmt: skip
            return
        if welcome.acked is None:
            self.give_up(
                "{where} answered our hello with a welcome that has no 'acked': it is not a collector "
                "(a 'serve'?). Check --connect; trying again later.",
                where=where,
            )  # fmt: skip
            return
        reporter = self.reporter
        if self.plain is not None:
            reporter.remove_text_listener(self.plain.text)
            self.plain = None
        self.mode = reporter.mode_told = "2"
        settings = reporter.stream
        interval = max(settings.heartbeat, welcome.heartbeat or 0.0) if settings.heartbeat else None
        self.link = StreamLink(self.sendMessage, self.clock, interval, self.peer_dead if interval else None,
                               self._problem, self._error, send_all=self.sendMessages)  # fmt: skip
        sender = Sender(
            reporter.outbox, self.link.send_all, REPORT, self._ended, settings.window, self.hello.last,
            paused=self.paused, on_ack=reporter.acknowledged,
        )  # fmt: skip
        self.link.attach(sender)
        send_at_once(self.transport)  # each reading goes out at once, not after the collector's delayed ACK
        journal = reporter.outbox.journal
        self.peer_log.info(
            "Streaming to {where} (rpisensor v2): it has stream {stream} up to seq {acked}; {count} "
            "readings to send from the outbox.",
            key="streaming", where=where, stream=journal.stream, acked=welcome.acked,
            count=max(0, journal.last - welcome.acked),
        )  # fmt: skip
        sender.start(Position(welcome.acked, welcome.digest))

    def _refused(self, text: str) -> None:
        self._cancel_hello_timer()
        try:
            reason = v2.parse(text).reason
        except v2.FrameError:
            reason = text[len("refused "):][:300]
        self.give_up(
            "{where} refused our stream: {reason}. Trying again later.", where=self._where(), reason=reason
        )

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    # -- the stream ---------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if data and self.link is not None:
            self.link.heard()
        super().dataReceived(data)

    def _problem(self, what: str) -> None:
        self.peer_log.warn(
            "{where} sent a frame this reporter cannot use ({error}); ignored.",
            key="unusable frames", where=self._where(), error=what,
        )  # fmt: skip

    def _error(self, text: str) -> None:
        self.peer_log.warn(
            "{where} said {text!r} about the stream.", key="stream errors", where=self._where(), text=text[:300]
        )

    def _ended(self, reason: str) -> None:
        """The sender cannot go on here (the outbox became a new stream; a gap to announce): reconnect."""
        self.peer_log.info("Closing the connection to {where}: {reason}.", where=self._where(), reason=reason)
        self.transport.loseConnection()

    def give_up(self, format: str, **fields) -> None:
        """Leave this server, saying why; the next attempt comes after a backoff."""
        self.peer_log.warn(format, key="servers left", **fields)
        self._refusal = "(left by this reporter)"
        self.transport.loseConnection()

    def peer_dead(self, seconds: float) -> None:
        """The heartbeat heard nothing for C{seconds}: drop the link, reconnect."""
        self.peer_log.warn(
            "Nothing from {peer} for {seconds:g} s, not even a heartbeat: the link looks dead "
            "(--dead-peer-timeout); reconnecting.",
            key="dead collectors", peer=self._where(), seconds=seconds,
        )  # fmt: skip
        self.transport.abortConnection()

    def _where(self) -> str:
        return peer_text(self.transport)

    # -- flow control -------------------------------------------------------------------------

    def pauseProducing(self) -> None:
        if self.paused:
            return
        self.paused = True
        if self.link is not None:
            self.link.pause()
        if self.plain is not None:
            self.plain.pause()
        self.peer_log.info(
            "{peer} is not taking data for now; sampling goes on into the outbox, and sending goes on "
            "when it takes data again.",
            key="paused", peer=self._where(),
        )  # fmt: skip

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            if self.link is not None:
                self.link.resume()
            if self.plain is not None and self.plain.started:
                self.plain.resume()

    def stopProducing(self) -> None:
        pass  # the connection is ending: connectionLost cleans up

    def stop_being_producer(self) -> None:
        """
        Unregister from the transport: nothing more will be sent. A TLS
        transport closes only once its producer is gone, so do this before
        closing the connection.
        """
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.paused = True
        if self.link is not None:
            self.link.pause()
        if self.plain is not None:
            self.plain.pause()

    def connectionLost(self, reason: Failure) -> None:
        self._producing = False  # the transport let go of its producer
        self._cancel_hello_timer()
        reporter = self.reporter
        if self.link is not None:
            self.link.stop()
        if self.plain is not None:
            reporter.remove_text_listener(self.plain.text)
        if reporter.connection is self:
            reporter.connection = None
        self._refusal = None  # (the reconnecting client has read it by now)
        super().connectionLost(reason)


class ReportFactory(Factory):
    protocol = ReportProtocol
    noisy = False

    def __init__(self, reporter) -> None:
        self.reporter = reporter
        self.clock = reporter.clock
