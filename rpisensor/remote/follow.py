"""
Following C{serve}'s stream from another program, across reconnects: the
client side of C{subscribe} that C{rpisensor watch} and the gpiozero pin
factory share. It shows readings, it does not store them (for that,
C{poll --subscribe --store}).

Each connection says C{hello}; from C{serve}'s C{welcome} it decides where
to start:

  - after the last entry it saw, when the stream is the one it followed
    before: a reconnect misses nothing and repeats nothing;
  - where the program asked (C{after}, e.g. C{watch --after 0}: everything
    the Pi's journal still holds) on the first connection;
  - otherwise a live view: each sensor's latest reading (marked snapshot),
    then every change.

Each reading is acknowledged as it arrives, so C{serve}'s window never
fills; heartbeats both ways notice a dead link within three intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from rpisensor.net.peers import peer_text
from rpisensor.net.request import ClientConnection
from rpisensor.net.wording import NamedLogger
from rpisensor.stream.heartbeat import Heartbeat
from rpisensor.wire import v2

#: Seconds to wait for C{welcome} before the server counts as not streaming.
HELLO_TIMEOUT = 10.0


class Audience:
    """What a follower tells its program; override what it needs."""

    def welcomed(self, welcome: v2.Welcome, after: int | None) -> None:
        """A connection is subscribed to C{welcome}'s stream, after C{after} (C{None}: a live view)."""

    def reading(self, reading: v2.Reading, device: str) -> None:
        """One reading, once; a snapshot reading (C{reading.snapshot}) is the state at subscribing."""

    def gap(self, gap: v2.Gap, device: str) -> None:
        """Entries of the stream that will never come, and why."""

    def lost(self) -> None:
        """The connection ended (the follower reconnects by itself)."""

    def unusable(self, why: str) -> None:
        """
        What the program asked for cannot be had from this server (a resume
        point beyond its stream's end, a server that does not stream); the
        follower closes the connection and, unless told to stop, tries again later.
        """


@dataclass
class Position:
    """Where a follower is: the stream it follows, and the last entry of it it has seen."""

    stream: str | None = None
    last: int | None = None


class FollowProtocol(ClientConnection):
    """One connection of a L{FollowFactory}."""

    _log = NamedLogger("rpisensor.client")

    welcome: v2.Welcome | None = None
    _heartbeat: Heartbeat | None = None
    _hello_timer = None

    def connectionMade(self) -> None:
        super().connectionMade()
        factory = self.factory
        self.sendMessage(v2.encode(v2.Hello("subscribe", heartbeat=_as_written(factory.heartbeat))))
        self._heartbeat = Heartbeat(self.clock, factory.heartbeat, self.sendMessage, self._dead)
        self._hello_timer = self.clock.callLater(HELLO_TIMEOUT, self._no_welcome)

    def sendMessage(self, text: str) -> None:
        super().sendMessage(text)
        if self._heartbeat is not None:
            self._heartbeat.sent()

    def dataReceived(self, data: bytes) -> None:
        if self._heartbeat is not None:
            self._heartbeat.heard()
        super().dataReceived(data)

    def messageFromServer(self, text: str) -> None:
        if text.startswith(("error: busy", "error: refused")):
            return  # the server closes now; the reconnecting client backs off and tries again
        if text.startswith("error:"):
            self._unusable(text)
        elif self.welcome is None:
            self._welcomed(text)
        elif v2.is_v2(text):
            self._entry(text)

    def _welcomed(self, text: str) -> None:
        self._cancel_hello_timer()
        try:
            welcome = v2.parse(text)
            if not isinstance(welcome, v2.Welcome) or welcome.stream is None:
                raise v2.FrameError(f"expected serve's welcome, got {text[:80]!r}")
        except v2.FrameError as e:
            self._unusable(f"it does not stream readings ({e}): is it rpisensor serve?")
            return
        after = self.factory.start_for(welcome)
        if after is not None and after > (welcome.last or 0):
            self._unusable(f"nothing after {after} in stream {welcome.stream}: it ends at {welcome.last or 0}")
            return
        self.welcome = welcome
        self.factory.position = Position(welcome.stream, after)
        self.sendMessage(v2.encode(v2.Subscribe(after)))
        self.factory.audience.welcomed(welcome, after)

    def _entry(self, text: str) -> None:
        try:
            frame = v2.parse(text)
        except v2.FrameError as e:
            self.peer_log.warn("Dropped a frame from {peer} that cannot be read: {error}", peer=peer_text(self.transport),
                               error=str(e), key="unreadable frames")  # fmt: skip
            return
        factory = self.factory
        position = factory.position
        if isinstance(frame, v2.Reading):
            if frame.snapshot:
                position.last = max(position.last or 0, frame.seq)
                factory.audience.reading(frame, self.welcome.device)
                return
            self.sendMessage(v2.encode(v2.Ack(frame.seq)))
            if position.last is not None and frame.seq <= position.last:
                return  # seen already (the snapshot held it)
            position.last = frame.seq
            factory.audience.reading(frame, self.welcome.device)
        elif isinstance(frame, v2.Gap):
            self.sendMessage(v2.encode(v2.Ack(frame.last)))
            position.last = frame.last
            factory.audience.gap(frame, self.welcome.device)
            if factory.live_after_gap:
                # What the gap held may have changed a state: start again from a live view.
                position.last = None
                self.transport.loseConnection()

    def _no_welcome(self) -> None:
        self._hello_timer = None
        self._unusable(f"no answer to hello within {HELLO_TIMEOUT:g} s: is it rpisensor serve?")

    def _unusable(self, why: str) -> None:
        self._cancel_hello_timer()
        self.factory.audience.unusable(why)
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.loseConnection()

    def _dead(self, seconds: float) -> None:
        self.peer_log.warn(
            "No heartbeat from {peer} for {seconds:g} s: the link looks dead; reconnecting.",
            peer=peer_text(self.transport), seconds=seconds, key="dead links",
        )  # fmt: skip
        self.transport.abortConnection()

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def connectionLost(self, reason: Failure = None) -> None:
        self._cancel_hello_timer()
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if reason is None:
            super().connectionLost()
        else:
            super().connectionLost(reason)
        self.factory.audience.lost()


class FollowFactory(Factory):
    """
    Builds the connections of one follower, and remembers its L{Position}
    across them.

    @param after: where the first connection starts: after this seq, or
        (C{None}) with a live view.
    @param heartbeat: seconds between heartbeats; three without a word from
        the server mean the link is dead.
    @param live_after_gap: after a C{gap}, start again from a live view
        (a program that mirrors states), rather than go on (one that shows
        every entry).
    @param new_stream_from_start: when the server's stream is not the one
        followed so far (its journal was made anew, as C{--journal none}
        does at each start), take it from its first entry, so nothing it
        recorded is missed, rather than with a live view.
    @param clock: the reactor the connections run on.
    """

    protocol = FollowProtocol
    noisy = False

    def __init__(
        self,
        audience: Audience,
        clock,
        after: int | None = None,
        heartbeat: float = 10.0,
        live_after_gap: bool = False,
        new_stream_from_start: bool = False,
    ) -> None:
        self.audience = audience
        self.clock = clock
        self.after = after
        self.heartbeat = heartbeat
        self.live_after_gap = live_after_gap
        self.new_stream_from_start = new_stream_from_start
        self.position = Position()

    def start_for(self, welcome: v2.Welcome) -> int | None:
        """Where to start in C{welcome}'s stream: see the module's docstring."""
        position = self.position
        if position.stream is None:
            return self.after
        if position.stream != welcome.stream:
            return 0 if self.new_stream_from_start else None
        if position.last is not None and position.last > (welcome.last or 0):
            return None  # the journal is behind what was seen (restored from a copy): a live view
        return position.last


def _as_written(seconds: float) -> float | int:
    """10 rather than 10.0 on the wire."""
    return int(seconds) if float(seconds).is_integer() else seconds
