"""
The poller: one command every few seconds, at most one unanswered, over a
connection kept open with reconnects (L{rpisensor.roles.poll.service}
builds it); with C{--subscribe}, the server's stream instead
(L{rpisensor.roles.poll.subscribing}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from rpisensor.net.peers import peer_text
from rpisensor.net.request import RequestProtocol
from rpisensor.net.wording import NamedLogger


class PollProtocol(RequestProtocol):
    """
    Sends the factory's command every C{interval} seconds, at most one
    outstanding at a time. No reply within C{timeout} seconds means the link
    is dead: the connection is aborted so the client service reconnects.
    """

    _log = NamedLogger("rpisensor.poll")

    _loop: LoopingCall | None = None

    def connectionMade(self) -> None:
        self._start_connection()
        self._start_polling()

    def _start_connection(self) -> None:
        super().connectionMade()
        self.peer = peer_text(self.transport)

    def _start_polling(self) -> None:
        self._loop = LoopingCall(self._poll)
        self._loop.clock = self.factory.clock
        self._loop.start(self.factory.interval, now=True).addErrback(self._polling_failed)

    def _polling_failed(self, failure: Failure) -> None:
        self._log.failure(
            "Polling {peer} stopped (a bug: please report it); reconnecting to start again",
            failure, peer=self.peer,
        )
        self.transport.abortConnection()

    def _poll(self) -> None:
        if self.outstanding or self.transport.disconnecting:
            return
        factory = self.factory
        d = self.request(factory.command).addTimeout(factory.timeout, factory.clock)
        d.addCallbacks(self._replied, self._failed)
        d.addErrback(lambda failure: self._log.failure("Handling the reply failed", failure))

    def _replied(self, text: str) -> None:
        self._log.info("Message from {peer}: {text}", peer=self.peer, text=text)
        if self.factory.on_reply is not None:
            self.factory.on_reply(text)

    def _failed(self, failure: Failure) -> None:
        if failure.check(TimeoutError, CancelledError) and not self.transport.disconnecting:
            self._log.warn(
                "No reply to {command!r} from {peer} within {timeout} s: the link looks "
                "dead, reconnecting. Raise --timeout if the sensor is just slow.",
                command=self.factory.command,
                peer=self.peer,
                timeout=self.factory.timeout,
            )
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        super().connectionLost(reason)


class PollFactory(Factory):
    """
    Builds L{PollProtocol}s.

    @param command: the message sent each time (the tutorial's C{go}).
    @param interval: seconds between commands.
    @param timeout: seconds to wait for a reply before calling the link dead.
    @param on_reply: called with each reply's text, for programs embedding the poller.
    """

    protocol = PollProtocol
    noisy = False

    def __init__(
        self,
        clock,
        command: str = "go",
        interval: float = 2.0,
        timeout: float = 10.0,
        on_reply: Callable[[str], object] | None = None,
    ) -> None:
        self.clock = clock
        self.command = command
        self.interval = interval
        self.timeout = timeout
        self.on_reply = on_reply
