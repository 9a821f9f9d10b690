"""
One connection's stream with C{serve}: the C{hello} it may start with (answered
with a welcome naming the stream, its owner and its bounds), then, after
C{subscribe}, a L{StreamLink} with a L{Sender} over the journal: a replay from
where the subscriber stands (checked against the journal), or a snapshot and
then live changes; windowed by the subscriber's C{ack}s, with heartbeats both ways.

A subscriber that stops reading (its connection's buffer full: the transport
pauses us) pauses its sender, so what it holds in memory stays bounded by the
window and the sender's cache; one that stays so for C{max_lag} seconds is
dropped, and resumes from its last acknowledged reading when it reconnects,
without loss: everything comes from the journal.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IReactorTime, ITCPTransport

from rpisensor.lograte import RateLimitedLog
from rpisensor.stream.heartbeat import MISSES
from rpisensor.stream.link import StreamLink
from rpisensor.stream.sender import SERVE, Position, Sender
from rpisensor.wire import v2

if TYPE_CHECKING:
    from rpisensor.roles.serve.publishing import PublishingService

#: Seconds between heartbeats when the client did not say (its hello has none, or it sent none).
DEFAULT_HEARTBEAT = 10.0

#: The reply to anything but an ack, a match or a heartbeat once a connection is subscribed.
ONLY_V2 = 'error: this connection is subscribed: send only ack {"seq":N}, match or heartbeat'


class SubscriberConnection(Protocol):
    """What a subscription uses of its connection (serve's L{SensorServerProtocol
    <rpisensor.roles.serve.connection.SensorServerProtocol>} is one)."""

    peer: str
    peer_log: RateLimitedLog
    transport: ITCPTransport

    def reply(self, text: str) -> None: ...

    def reply_all(self, texts: list[str]) -> None: ...

    def closeAfterWork(self) -> None: ...


def canonical(text: str) -> str:
    """A frame as a person may type it (C{SUBSCRIBE\\r\\n}, two spaces) as L{v2.parse} takes it."""
    parts = text.strip().split(None, 1)
    if not parts:
        return ""
    return parts[0].lower() + (" " + parts[1] if len(parts) > 1 else "")


class Subscription:
    """
    The stream of one connection: created by C{hello} (C{announced}: the
    client said it heartbeats, so its silence for L{MISSES} intervals means
    it is gone) or by a bare C{subscribe} (a person with nc: we heartbeat,
    and only C{--idle-timeout} ends a silent one).
    """

    def __init__(
        self,
        connection: SubscriberConnection,
        publishing: PublishingService,
        clock: IReactorTime,
        interval: float | None,
        announced: bool,
    ) -> None:
        self.connection = connection
        self.publishing = publishing
        self.interval = interval if interval is not None else DEFAULT_HEARTBEAT
        self.announced = announced
        self.clock = clock
        self.link = self._link()
        self.sender: Sender | None = None
        #: True once C{subscribe} was accepted: the connection then takes only stream frames.
        self.subscribed = False
        self.after: int | None = None
        self.paused = False
        self._stall = None

    def _link(self) -> StreamLink:
        on_dead = self._dead if self.announced else None
        connection = self.connection
        return StreamLink(connection.reply, self.clock, self.interval, on_dead, self._problem, self._error,
                          send_all=connection.reply_all)  # fmt: skip

    def welcome(self) -> str:
        interval = self.interval
        shown = int(interval) if interval.is_integer() else interval  # 10, as the client wrote it, not 10.0
        journal = self.publishing.journal.journal
        return v2.encode(v2.Welcome(
            device=self.publishing.device, stream=journal.stream, first=journal.first, last=journal.last,
            heartbeat=shown, owner=journal.secret, incarnation=journal.incarnation,
        ))  # fmt: skip

    # -- subscribing ------------------------------------------------------------------

    def subscribe(self, after: int | None, digest: str | None = None) -> None:
        """
        Accept C{subscribe} and start streaming: from C{after} (checked against
        the journal with its C{digest}), or a snapshot of every input's latest
        reading and then live ones. The frames go out as replies do: after the
        replies to earlier commands (a C{go} still being read).
        """
        self.subscribed = True
        self.after = after
        publishing = self.publishing
        publishing.subscriptions.add(self)
        # (No announced last: a subscriber chose this server, so no stranger can push a gap
        # through this stream; and a subscriber left behind gets the gap of what was trimmed.)
        self.sender = Sender(
            publishing.journal, self.link.send_all, SERVE, self._ended, publishing.settings.window,
            paused=self.paused, on_sent=publishing.on_sent,
        )  # fmt: skip
        self.link.attach(self.sender)
        if after is None:
            publishing.journal.snapshot().addCallbacks(self._snapshot, self._snapshot_failed)
        else:
            self.sender.start(Position(after, digest))

    def _snapshot(self, snapshot) -> None:
        if self.sender is None or self.sender.stopped:
            return
        last, latest = snapshot
        for reading in sorted(latest.values(), key=lambda r: r.seq):
            self.link.send(v2.encode(replace(reading, snapshot=True)))
        if latest and self.publishing.on_sent is not None:
            self.publishing.on_sent(len(latest))
        self.sender.start(Position(last))

    def _snapshot_failed(self, failure) -> None:
        self._ended(f"the journal could not be read ({failure.getErrorMessage()})")

    def _ended(self, reason: str) -> None:
        """The sender cannot go on here (the journal became a new stream, or must announce a gap)."""
        self.connection.peer_log.info(
            "Closing the stream to {peer}: {reason}.", key="subscriptions ended", peer=self.connection.peer,
            reason=reason,
        )  # fmt: skip
        self.connection.reply(f"error: {reason}")
        self.connection.closeAfterWork()

    # -- what the subscriber sends ------------------------------------------------------

    def heard(self) -> None:
        self.link.heard()

    def wrote(self) -> None:
        if self.link.heartbeat is not None:
            self.link.heartbeat.sent()

    def receive(self, text: str) -> None:
        """A message on a subscribed connection: an ack, a match, a heartbeat, or an error reply."""
        frame_text = canonical(text)
        if not frame_text:
            return
        if frame_text.split(" ", 1)[0] not in ("ack", "match", "heartbeat", "error:"):
            self.connection.reply(ONLY_V2)
            return
        self.link.message(frame_text)

    def _problem(self, what: str) -> None:
        self.connection.reply(f"error: {what}")

    def _error(self, text: str) -> None:
        self.connection.peer_log.info(
            "Subscriber {peer} said {text!r}.", key="subscriber errors", peer=self.connection.peer, text=text[:200]
        )

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
        self.link.pause()
        self.link.quiet()
        self._stall = self.clock.callLater(self.publishing.settings.max_lag, self._stalled)

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        self.link.beat()
        self.link.resume()

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

    def stop(self) -> None:
        """The connection is gone."""
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        self.link.stop()
        self.publishing.subscriptions.discard(self)

    # -- status ---------------------------------------------------------------------------

    def _in_flight(self) -> int:
        return 0 if self.sender is None else self.sender.in_flight

    def status(self) -> dict:
        sender = self.sender
        acked = sender.acked if sender is not None and sender.started else (self.after or 0)
        return {"peer": self.connection.peer, "acked": acked, "in_flight": self._in_flight(),
                "paused": self.paused}  # fmt: skip
