"""
One connection's v2 session with C{serve}: the C{hello} it may start with,
then, after C{subscribe}, the stream of the journal (L{Publication}: a
snapshot or a replay, then each change as it is committed), windowed by the
subscriber's C{ack}s, with heartbeats both ways.

A subscriber that stops reading (its connection's buffer full: the transport
pauses us) pauses its publication, so what it holds in memory stays bounded
by the window and the sender's cache; one that stays so for C{max_lag}
seconds is dropped, and resumes from its last acknowledged reading when it
reconnects, without loss: everything comes from the journal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rpisensor.stream.heartbeat import MISSES, Heartbeat
from rpisensor.stream.publisher import AheadOfStream, Publication
from rpisensor.wire import v2

if TYPE_CHECKING:
    from rpisensor.roles.serve.connection import SensorServerProtocol
    from rpisensor.roles.serve.publishing import PublishingService

#: Seconds between heartbeats when the client did not say (its hello has none, or it sent none).
DEFAULT_HEARTBEAT = 10.0

#: The reply to anything but an ack or a heartbeat once a connection is subscribed.
ONLY_V2 = 'error: this connection is subscribed: send only ack {"seq":N} or heartbeat'


def canonical(text: str) -> str:
    """A frame as a person may type it (C{SUBSCRIBE\\r\\n}, two spaces) as L{v2.parse} takes it."""
    parts = text.strip().split(None, 1)
    if not parts:
        return ""
    return parts[0].lower() + (" " + parts[1] if len(parts) > 1 else "")


class Subscription:
    """
    The v2 side of one connection: created by C{hello} (C{announced}: the
    client said it heartbeats, so its silence for L{MISSES} intervals means
    it is gone) or by a bare C{subscribe} (a person with nc: we heartbeat,
    and only C{--idle-timeout} ends a silent one).
    """

    def __init__(
        self,
        connection: SensorServerProtocol,
        publishing: PublishingService,
        interval: float | None,
        announced: bool,
    ) -> None:
        self.connection = connection
        self.publishing = publishing
        self.interval = interval if interval is not None else DEFAULT_HEARTBEAT
        self.announced = announced
        self.clock = connection.factory.clock
        self.publication = Publication(
            publishing.journal, connection.reply, publishing.device, publishing.settings.window,
            on_sent=publishing.on_sent,
        )
        #: True once C{subscribe} was accepted: the connection then takes only acks and heartbeats.
        self.subscribed = False
        self.after: int | None = None
        self.paused = False
        self._stall = None
        self._heartbeat: Heartbeat | None = self._beat()

    def _beat(self) -> Heartbeat:
        on_dead = self._dead if self.announced else None
        return Heartbeat(self.clock, self.interval, self.connection.reply, on_dead)

    def welcome(self) -> str:
        interval = self.interval
        shown = int(interval) if interval.is_integer() else interval  # 10, as the client wrote it, not 10.0
        return v2.encode(self.publication.welcome(shown))

    # -- subscribing ------------------------------------------------------------------

    def subscribe(self, after: int | None) -> None:
        """
        Accept C{subscribe} and start streaming. The frames go out as replies
        do: after the replies to earlier commands (a C{go} still being read).
        """
        self.subscribed = True
        self.after = after
        self.publishing.subscriptions.add(self)
        try:
            self.publication.subscribe(self.after)
        except AheadOfStream as e:
            self.connection.reply(f"error: {e}")
            self.connection.closeAfterWork()

    # -- what the subscriber sends ------------------------------------------------------

    def heard(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.heard()

    def wrote(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.sent()

    def receive(self, text: str) -> None:
        """A message on a subscribed connection: an ack, a heartbeat, or an error reply."""
        frame_text = canonical(text)
        if not frame_text:
            return
        verb = frame_text.split(" ", 1)[0]
        if verb not in ("ack", "heartbeat"):
            self.connection.reply(ONLY_V2)
            return
        try:
            frame = v2.parse(frame_text)
        except v2.FrameError as e:
            self.connection.reply(f"error: {e}")
            return
        if isinstance(frame, v2.Ack):
            self.ack(frame.seq)

    def ack(self, seq: int) -> None:
        sender = self.publication.sender
        if sender is None:
            return  # nothing sent yet: the snapshot is still being read
        sent = sender.next - 1
        if seq > sent:
            self.connection.reply(f"error: ack {seq} is beyond the last reading sent ({sent})")
            return
        sender.ack(seq)

    # -- flow control -------------------------------------------------------------------

    def pause(self) -> None:
        """
        The subscriber does not read what we send: send nothing more, and stop
        its heartbeat (we read nothing from it either, so its silence is ours);
        drop it if this lasts C{max_lag} seconds.
        """
        if self.paused:
            return
        self.paused = True
        self.publication.pause()
        self._stop_heartbeat()
        self._stall = self.clock.callLater(self.publishing.settings.max_lag, self._stalled)

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        self._heartbeat = self._beat()
        self.publication.resume()

    def _stalled(self) -> None:
        self._stall = None
        self.connection.peer_log.warn(
            "Dropped subscriber {peer}: it read nothing sent to it for {seconds:g} s "
            "(--max-subscriber-lag), with {in_flight} readings not acknowledged. It resumes "
            "from its last acknowledged reading when it reconnects.",
            key="slow subscribers dropped",
            peer=self.connection.peer,
            seconds=self.publishing.settings.max_lag,
            in_flight=self._in_flight(),
        )
        self.connection.transport.abortConnection()

    def _dead(self, seconds: float) -> None:
        self._heartbeat = None
        self.connection.peer_log.info(
            "Dropped subscriber {peer}: nothing heard from it for {seconds:g} s ({misses} "
            "heartbeats of {interval:g} s, the interval it asked for). It resumes from its last "
            "acknowledged reading when it reconnects.",
            key="silent subscribers dropped",
            peer=self.connection.peer,
            seconds=seconds,
            misses=MISSES,
            interval=self.interval,
        )
        self.connection.transport.abortConnection()

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def stop(self) -> None:
        """The connection is gone."""
        self._stop_heartbeat()
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        self.publication.stop()
        self.publishing.subscriptions.discard(self)

    # -- status ---------------------------------------------------------------------------

    def _in_flight(self) -> int:
        sender = self.publication.sender
        return 0 if sender is None else sender.in_flight

    def status(self) -> dict:
        sender = self.publication.sender
        acked = sender.acked if sender is not None else (self.after or 0)
        return {"peer": self.connection.peer, "acked": acked, "in_flight": self._in_flight(),
                "paused": self.paused}  # fmt: skip
