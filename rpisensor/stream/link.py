"""
One connection's stream once it was negotiated, whichever way it flows and
whichever end listens: the same for C{report} to C{collect} and for C{serve}
to C{poll --subscribe}.

The four stream roles are the two sides times the two ends: a L{Sender} over a
journal (C{report}'s outbox, C{serve}'s journal) or a L{Receiver} over a store
(C{collect}, C{poll --subscribe}), on the connecting end or the listening one.
The roles only negotiate (hello, welcome or refused, and for a subscriber its
C{subscribe}) and wire a link; everything after that is here: heartbeats both
ways, each frame the peer sends given to the side that expects it, and the
transport's flow control.
"""

from __future__ import annotations

from collections.abc import Callable

from rpisensor.stream.heartbeat import Heartbeat
from rpisensor.stream.receiver import Receiver
from rpisensor.stream.sender import Sender
from rpisensor.wire import v2


class StreamLink:
    """
    The stream of one connection.

    @param send: sends the text of one frame on the connection.
    @param send_all: sends the texts of several frames, in order, in one
        write; by default each through C{send}.
    @param interval: seconds between heartbeats; C{None}: none.
    @param on_dead: called with the seconds of silence once the peer went
        quiet for L{rpisensor.stream.heartbeat.MISSES} intervals; C{None}:
        its silence means nothing (a person typing into nc).
    @param on_problem: called with what is wrong when the peer sends a frame
        this side cannot use: the role answers C{error: ...}, or logs it.
    @param on_error: called with an C{error: ...} line the peer sent.

    @ivar side: the L{Sender} or L{Receiver}, once L{attach}ed.
    """

    def __init__(
        self,
        send: Callable[[str], None],
        clock,
        interval: float | None,
        on_dead: Callable[[float], None] | None,
        on_problem: Callable[[str], None],
        on_error: Callable[[str], None],
        send_all: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._send = send
        self._send_all = send_all if send_all is not None else self._each
        self._on_problem = on_problem
        self._on_error = on_error
        self._clock, self._interval, self._on_dead = clock, interval, on_dead
        self.side: Sender | Receiver | None = None
        self.heartbeat: Heartbeat | None = None
        self.stopped = False
        self.beat()

    def beat(self) -> None:
        """Heartbeat (again) from now on, both ways: one sent, one expected, each C{interval}."""
        self.quiet()
        if self._interval is not None and not self.stopped:
            self.heartbeat = Heartbeat(self._clock, self._interval, self._send, self._on_dead)

    def quiet(self) -> None:
        """No heartbeat, either way, until L{beat}: we read nothing from a peer we stopped reading."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None

    def attach(self, side: Sender | Receiver) -> None:
        self.side = side

    def send(self, text: str) -> None:
        """Send one frame (a heartbeat is due only after an interval of nothing sent)."""
        if self.stopped:
            return
        self._send(text)
        if self.heartbeat is not None:
            self.heartbeat.sent()

    def send_all(self, texts: list[str]) -> None:
        """Send frames in order: a sender's batch, in one write where the connection can."""
        if self.stopped or not texts:
            return
        self._send_all(texts)
        if self.heartbeat is not None:
            self.heartbeat.sent()

    def _each(self, texts: list[str]) -> None:
        for text in texts:
            self._send(text)

    def heard(self) -> None:
        """Bytes came from the peer: it is alive."""
        if self.heartbeat is not None:
            self.heartbeat.heard()

    def message(self, text: str) -> None:
        """One message from the peer."""
        if self.stopped:
            return
        if text.startswith("error:"):
            if isinstance(self.side, Sender):
                self.side.error(text)
            self._on_error(text)
            return
        try:
            frame = v2.parse(text)
        except v2.FrameError as e:
            self._on_problem(str(e))
            return
        kind = frame.__class__
        if kind is v2.Heartbeat:
            return
        side = self.side
        if isinstance(side, Receiver):
            if kind is v2.Reading or kind is v2.Gap:
                side.receive(frame)
            elif kind is v2.Probe:
                side.probe(frame)
            elif kind is v2.Last:
                side.last(frame)
            else:
                self._on_problem(
                    f"a sender sends reading, gap, last, probe and heartbeat frames here, not {text.split(' ', 1)[0]}"
                )
        elif isinstance(side, Sender):
            if kind is v2.Ack:
                if not side.ack(frame.seq):
                    self._on_problem(f"ack {frame.seq} is beyond the last entry sent ({side.next - 1})")
            elif kind is v2.Match:
                side.matched(frame)
            else:
                self._on_problem(f"a receiver sends ack, match and heartbeat frames here, not {text.split(' ', 1)[0]}")

    def pause(self) -> None:
        """The transport's buffer is full: a sender sends nothing more until L{resume}."""
        if isinstance(self.side, Sender):
            self.side.pause()

    def resume(self) -> None:
        if isinstance(self.side, Sender):
            self.side.resume()

    def stop(self) -> None:
        """The connection is gone (or going): no more heartbeats, no more frames."""
        if self.stopped:
            return
        self.stopped = True
        self.quiet()
        if isinstance(self.side, Sender):
            self.side.stop()
        elif isinstance(self.side, Receiver):
            self.side.connection_lost()
