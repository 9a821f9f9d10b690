"""
The reporter's side of one v2 connection once the collector has welcomed
it: the outbox's entries go out through a L{StreamSender} from the
collector's C{acked} on (a replay, then live), the collector's cumulative
acks let the outbox go, and a L{Heartbeat} both ways tells a dead collector
from a quiet one.
"""

from __future__ import annotations

from collections.abc import Callable

from rpisensor.stream.heartbeat import Heartbeat
from rpisensor.stream.outbox import JournalService
from rpisensor.stream.sender import StreamSender
from rpisensor.wire import v2


class Uplink:
    """
    Streams C{outbox} to the collector that sent C{welcome}.

    @param send: sends the text of one frame.
    @param heartbeat: seconds between heartbeats, or C{None} for none (and
        no watch for a silent collector).
    @param on_dead: called once with the seconds of silence after which the
        collector counts as dead; the caller aborts the connection.
    @param on_ack: called with each new cumulative ack, once the sender took it.
    @param paused: the transport is paused already: send nothing before L{resume}.
    @raise rpisensor.stream.sender.ReceiverAhead: the collector has more of
        this stream than the outbox holds.
    """

    def __init__(
        self,
        outbox: JournalService,
        send: Callable[[str], None],
        welcome: v2.Welcome,
        clock,
        heartbeat: float | None,
        window: int,
        on_dead: Callable[[float], None],
        on_ack: Callable[[int], None],
        paused: bool = False,
    ) -> None:
        self._send = send
        self._on_ack = on_ack
        self.heartbeat: Heartbeat | None = None
        if heartbeat is not None:
            # The collector beats at the interval it echoed (ours, unless it
            # chose a longer one): never call it dead before that.
            interval = max(heartbeat, welcome.heartbeat or 0.0)
            self.heartbeat = Heartbeat(clock, interval, self._send_frame, on_dead)
        try:
            self.sender = StreamSender(outbox, self._send_frame, welcome.acked or 0, window, paused)
        except Exception:
            self.stop()
            raise

    def _send_frame(self, text: str) -> None:
        self._send(text)
        if self.heartbeat is not None:
            self.heartbeat.sent()

    def heard(self) -> None:
        """Bytes came from the collector: it is alive."""
        if self.heartbeat is not None:
            self.heartbeat.heard()

    def received(self, text: str) -> bool:
        """
        Take one frame from the collector; return whether it was one this
        side expects (an ack, a heartbeat). Anything else is for the caller
        to log.

        @raise v2.FrameError: a v2 frame that is malformed.
        """
        if not v2.is_v2(text):
            return False
        frame = v2.parse(text)
        if isinstance(frame, v2.Ack):
            before = self.sender.acked
            self.sender.ack(frame.seq)
            if self.sender.acked > before:
                self._on_ack(self.sender.acked)
            return True
        return isinstance(frame, v2.Heartbeat)

    def pause(self) -> None:
        """The transport's buffer is full: send nothing more until L{resume}."""
        self.sender.pause()

    def resume(self) -> None:
        self.sender.resume()

    @property
    def acked(self) -> int:
        return self.sender.acked

    def stop(self) -> None:
        """The connection is gone."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.stop()
