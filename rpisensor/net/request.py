"""
The client side of the protocol: send a command, get its reply.

Replies come back in the order the commands were sent (the server
guarantees it), so each reply completes the oldest outstanding request.
"""

from __future__ import annotations

from collections import deque
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from rpisensor import wire
from rpisensor.lograte import RateLimitedLog
from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.net.peers import peer_text
from rpisensor.net.wording import NamedLogger, plain_reason

#: Lines of one kind per minute that a server can make a client log.
PEER_LINE_BURST = 10

# One rate limit per client (its factory), shared by its successive connections.
_peer_logs: WeakKeyDictionary = WeakKeyDictionary()


class ClientConnection(NullTerminatedProtocol):
    """
    Base of the client roles' protocols: messages from the server go to
    L{messageFromServer}; disconnects are logged in the tutorial's words.

    A server that will not serve a client (not allowed, or too busy) says
    why in one C{error: ...} message and closes: L{parting_error} keeps such
    a message while it is the last one received, so that whoever sees the
    connection end can tell a refusal from a lost link.

    @ivar clock: the factory's C{clock}, or the reactor.
    @ivar peer_log: a L{RateLimitedLog} for the lines the server can cause.
    """

    _log = NamedLogger("rpisensor.client")

    #: The last message from the server, if it starts with C{error:}.
    parting_error: str | None = None
    #: This side closed the connection (the program is stopping): the log says so.
    closed_by_us = False

    def makeConnection(self, transport) -> None:
        self.clock = getattr(self.factory, "clock", None)
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        super().makeConnection(transport)

    def _peer_log_for(self, factory) -> RateLimitedLog:
        try:
            return _peer_logs[factory]
        except (KeyError, TypeError):  # TypeError: no factory (None), or not weakly referable
            pass
        log = RateLimitedLog(self.clock, self._log, burst=PEER_LINE_BURST)
        try:
            _peer_logs[factory] = log
        except TypeError:
            pass
        return log

    def messageReceived(self, text: str) -> None:
        self.parting_error = text if text.startswith("error:") else None
        self.messageFromServer(text)

    def messageFromServer(self, text: str) -> None:
        """Override: one whole message from the server."""

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        where = peer_text(self.transport)
        if self.closed_by_us:
            self.peer_log.info("Disconnected from {where}: this client closed the connection (it is stopping)",
                               where=where)  # fmt: skip
        elif self.parting_error is not None:
            self.peer_log.warn(
                "Disconnected from {where}: the server said {said!r} and closed the connection",
                where=where,
                said=self.parting_error,
            )
        else:
            self.peer_log.info("Disconnected from {where}: {reason}", where=where, reason=plain_reason(reason))


class ReplyTooLong(ConnectionError):
    """A reply grew past the most this client takes; the connection was closed, as its framing is lost."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"the server's reply reached {length} bytes, over the {limit} this client takes in one message"
        )
        self.length, self.limit = length, limit


class RequestProtocol(ClientConnection):
    """
    C{request(text)} sends a message and returns a Deferred for the next reply.

    Messages arriving with no request outstanding go to L{unsolicitedMessage}.
    When the connection ends, outstanding requests fail with its reason, and
    later ones fail at once with it.
    """

    def __init__(self) -> None:
        self._waiting: deque[Deferred[str]] = deque()
        self._ended: Failure | None = None
        #: Fires when the connection has ended.
        self.lost: Deferred[None] = Deferred()

    @property
    def outstanding(self) -> int:
        """How many requests still wait for their reply."""
        return len(self._waiting)

    def request(self, text: str) -> Deferred[str]:
        """
        Send C{text}; the result fires with the reply text, or fails with the
        reason the connection ended (at once, if it already has).

        @raise rpisensor.wire.MessageError: C{text} contains a NUL, or is
            blank: the server ignores blank messages, so it would never get a
            reply, and every later request would get the reply meant for the
            one before.
        """
        if not wire.parse_command(text)[0]:
            raise wire.MessageError(
                f"a request cannot be blank ({text!r}): the server sends no reply to a blank message"
            )
        if self._ended is not None:
            return fail(self._ended)
        self.sendMessage(text)
        d: Deferred[str] = Deferred()
        self._waiting.append(d)
        return d

    def messageFromServer(self, text: str) -> None:
        if self._waiting:
            self._waiting.popleft().callback(text)
        else:
            self.unsolicitedMessage(text)

    def unsolicitedMessage(self, text: str) -> None:
        """Override: a message that answers no request. By default, logged (rate-limited)."""
        self.peer_log.info(
            "Message from {peer} that answers no request: {text!r}",
            peer=peer_text(self.transport),
            text=text,
        )

    def messageTooLong(self, length: int) -> None:
        """A reply over the limit: the requests waiting fail with L{ReplyTooLong}, not a lost connection."""
        self._too_long = Failure(ReplyTooLong(length, self.MAX_LENGTH))
        super().messageTooLong(length)

    _too_long: Failure | None = None

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._too_long is not None:
            reason = self._too_long
        self._ended = reason
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(reason)
        super().connectionLost(reason)
        self.lost.callback(None)
