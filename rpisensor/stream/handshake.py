"""
The client's side of the v2 negotiation: it speaks first with C{hello}, then
waits for the server's C{welcome}. A v1 peer (the tutorial's programs, an
older rpisensor) answers nothing, or C{error: ...}: then the client knows it
must speak v1. Nothing is ever assumed: a welcome is the only proof of v2.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred

from rpisensor.wire import v2

#: How an rpisensor server turns a client away (not allowed, too busy) before
#: it reads anything: said to every client, so not an answer to the hello.
REFUSALS = ("error: refused", "error: busy")


class NotV2(Exception):
    """
    The server does not speak v2: it said C{error: ...} to our hello, or
    nothing within the timeout.

    @ivar said: the server's C{error:} line, or C{None} when it said nothing.
    """

    def __init__(self, why: str, said: str | None = None) -> None:
        super().__init__(why)
        self.said = said


class Handshake:
    """
    Sends C{hello} through C{send} (the text of one frame) at once, then
    waits up to C{timeout} seconds on C{clock}. L{result} fires with the
    server's L{v2.Welcome}, or fails with L{NotV2}, or with L{v2.FrameError}
    for a welcome that is malformed (a v2 server, but a broken one).

    Give it every message from the server with L{received} until L{result}
    has fired; L{stop} when the connection is gone first.
    """

    def __init__(self, clock, hello: v2.Hello, send: Callable[[str], None], timeout: float) -> None:
        self.timeout = timeout
        self.result: Deferred = Deferred()
        send(v2.encode(hello))
        self._timer = clock.callLater(timeout, self._timed_out)

    @property
    def done(self) -> bool:
        return self.result.called

    def received(self, text: str) -> bool:
        """
        Whether C{text} answered the hello (a welcome, or an C{error:} line);
        anything else a server says before answering is not for us, nor is a
        refusal (L{REFUSALS}): the server closes, and the client backs off.
        """
        if self.done or text.startswith(REFUSALS):
            return False
        if text.startswith("error:"):
            self._settle(NotV2(f"it answered our hello with {text!r}", said=text))
            return True
        if text.split(" ", 1)[0] != "welcome":
            return False
        try:
            frame = v2.parse(text)
        except v2.FrameError as e:
            self._settle(e)
        else:
            self._settle(frame)
        return True

    def _timed_out(self) -> None:
        self._timer = None
        self._settle(NotV2(f"it did not answer our hello within {self.timeout:g} s"))

    def _settle(self, outcome) -> None:
        self.stop()
        if isinstance(outcome, Exception):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)

    def stop(self) -> None:
        """The connection is gone (or the answer came): no timeout any more."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
