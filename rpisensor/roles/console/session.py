"""
What the console does with each line typed, in the reactor's thread:
commands go to the server and their replies are shown in order; C{repeat}
sends one command again and again (a deadman kept alive) until the next
line or Ctrl-C; C{quit} or the end of input leaves. When the connection
drops the console says so and goes on: its connection comes back by itself
(L{connected}), and lines typed meanwhile are not sent, saying so.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import LoopingCall

from rpisensor import wire
from rpisensor.net.request import RequestProtocol

#: The console's own commands, shown after the server's help.
LOCAL_HELP = (
    "console: repeat SECONDS COMMAND (send it every SECONDS until Enter or Ctrl-C, to keep a "
    "deadman output alive) | quit (or Ctrl-D)"
)
#: The shortest repeat interval: fifty commands a second.
MIN_INTERVAL = 0.02


class Console:
    """
    @param commands: the connection commands go over, or C{None} until L{connected}.
    @param show: shows one line to the user.
    @param finish: called once, with the exit status, when the console is done.
    """

    def __init__(
        self, clock, commands: RequestProtocol | None, show: Callable[[str], None], finish: Callable[[int], None]
    ) -> None:
        self._clock = clock
        self._commands = commands
        self._show = show
        self._finish = finish
        self._repeat: LoopingCall | None = None
        self._repeating = ""
        self._repeats = 0
        self._last_reply: str | None = None
        self._in_flight = 0
        self._ending = False
        self.done = False

    # -- input --------------------------------------------------------------------

    def line(self, text: str) -> None:
        """One line the user typed (without its newline)."""
        text = text.strip()
        if self._repeat is not None:
            self.stop_repeating()
        if not text or self.done:
            return
        verb = text.split(None, 1)[0].lower()
        if verb in ("quit", "exit"):
            self._end(0)
        elif verb == "repeat":
            self._start_repeating(text)
        else:
            self._send(text, show_all=True)

    def interrupt(self) -> None:
        """Ctrl-C: stops a repeat; without one, leaves."""
        if self._repeat is not None:
            self.stop_repeating()
        else:
            self._end(0)

    def end_of_input(self) -> None:
        """Ctrl-D, or the end of piped input: leave once the replies still due have come."""
        self.stop_repeating()
        self._ending = True
        if not self._in_flight:
            self._end(0)

    def output_closed(self) -> None:
        """What the console shows cannot be written any more (its reader left: C{| head}): leave."""
        self.stop_repeating()
        self._end(0)

    def connected(self, commands: RequestProtocol, again: str | None = None) -> None:
        """A connection to send commands over: the first, or (with C{again}, said to the user) a new one."""
        self._commands = commands
        if again and not self.done:
            self._show(f"console: {again}")

    def connection_lost(self, reason: str) -> None:
        """The connection dropped: say why; a repeat stops (its deadman goes safe on the server)."""
        self._commands = None
        if not self.done:
            self.stop_repeating()
            self._show(f"console: {reason}")

    # -- commands -----------------------------------------------------------------

    def _send(self, text: str, show_all: bool) -> None:
        if self._commands is None:
            self._show(f"console: not connected (reconnecting): {text!r} was not sent")
            return
        try:
            reply = self._commands.request(text)
        except wire.MessageError as e:
            self._show(f"console: {e}")
            return
        self._in_flight += 1
        reply.addCallbacks(self._replied, self._no_reply, callbackArgs=(text, show_all), errbackArgs=(text,))

    def _no_reply(self, failure, text: str) -> None:
        self._in_flight -= 1
        self._show(f"console: no reply to {text!r}: the connection dropped")
        if self._ending and not self._in_flight:
            self._end(0)

    def _replied(self, reply: str, text: str, show_all: bool) -> None:
        self._in_flight -= 1
        # A repeat shows its first reply, then only what differs (an error, a claim by another).
        if show_all or reply != self._last_reply:
            self._show(reply)
        self._last_reply = None if show_all else reply
        if show_all and text.split(None, 1)[0].lower() == "help":
            self._show(LOCAL_HELP)
        if self._ending and not self._in_flight:
            self._end(0)

    def _start_repeating(self, text: str) -> None:
        parts = text.split(None, 2)
        try:
            interval = float(parts[1]) if len(parts) == 3 else None
        except ValueError:
            interval = None
        if interval is None or not interval >= MIN_INTERVAL:
            self._show(
                f"console: usage: repeat SECONDS COMMAND, SECONDS at least {MIN_INTERVAL:g}, "
                "e.g. repeat 0.2 set motor on"
            )
            return
        self._repeating, self._repeats, self._last_reply = parts[2], 0, None
        self._show(f"console: sending {parts[2]!r} every {interval:g} s; Enter or Ctrl-C stops")
        self._repeat = LoopingCall(self._again)
        self._repeat.clock = self._clock
        self._repeat.start(interval, now=True)

    def _again(self) -> None:
        if self._in_flight:  # the last one has no reply yet: do not pile up on a slow link
            return
        self._repeats += 1
        self._send(self._repeating, show_all=False)

    def stop_repeating(self) -> None:
        if self._repeat is None:
            return
        repeat, self._repeat = self._repeat, None
        if repeat.running:
            repeat.stop()
        self._show(f"console: stopped repeating {self._repeating!r} (sent {self._repeats} times)")

    def _end(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        self._finish(status)
