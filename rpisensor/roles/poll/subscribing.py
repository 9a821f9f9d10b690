"""
C{poll --subscribe}: ask the server for its stream instead of polling it.
The client speaks first with C{hello}; a v2 C{serve} answers C{welcome} and
then pushes each reading as it happens; the connection's L{StreamLink}
with a L{Receiver} over the store takes it from there. A
server that answers C{error: ...} (an older C{serve}: unknown command) or
nothing within C{--hello-timeout} (the tutorial's DataServer1/2, which
ignore what they do not know) is polled with C{go}, as without
C{--subscribe}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.lograte import RateLimitedLog
from rpisensor.roles.poll.poller import PollFactory, PollProtocol
from rpisensor.store import Record, StoreService
from rpisensor.stream.delivery import Delivery, OnGap, OnReading, Stamp
from rpisensor.entries import Entry, Reading
from rpisensor.stream.link import StreamLink
from rpisensor.stream.receiver import Receiver, Refusal, StreamRegistry, StreamState, owner_tag
from rpisensor.wire import v2

_log = Logger(namespace="rpisensor.poll")


def _as_written(seconds: float | None) -> float | int | None:
    """10 rather than 10.0 on the wire, as a person would write it."""
    return int(seconds) if seconds is not None and float(seconds).is_integer() else seconds


def describe(record: Reading) -> str:
    """
    A reading as the log shows it: C{button: Button pressed (seq 42, 19:33:25.123)}.
    Whether the Pi's clock was synchronised is said once when it changes (L{ClockNotes}), not on every line.
    """
    moment = record.ts[11:23] if len(record.ts) >= 23 else record.ts
    notes = [f"seq {record.seq}", moment]
    if record.snapshot:
        notes.append("state when subscribed")
    return f"{record.sensor}: {record.text} ({', '.join(notes)})"


class ClockNotes:
    """One line when a Pi's readings start coming with an unsynchronised clock, and one when it is synchronised."""

    def __init__(self) -> None:
        self._synced: dict[str, bool] = {}

    def note(self, record: Reading) -> None:
        before = self._synced.get(record.device, True)
        self._synced[record.device] = record.synced
        if before and not record.synced:
            _log.info("The clock of {device} is not synchronised (NTP): the times of its readings may be off "
                      "until it is.", device=record.device)  # fmt: skip
        elif not before and record.synced:
            _log.info("The clock of {device} is synchronised now.", device=record.device)


class SubscribeProtocol(PollProtocol):
    """
    One connection of C{poll --subscribe}: negotiates, then either follows
    the stream or, with a v1 server, polls it as L{PollProtocol} does.

    @ivar mode: C{"hello"} until the server answered, then C{"v2"} or C{"v1"}.
    """

    mode = "hello"
    welcome: v2.Welcome | None = None
    link: StreamLink | None = None
    _hello_timer = None
    #: Why this client closed the connection itself and wants to wait before the next try.
    _gave_up: str | None = None

    def connectionMade(self) -> None:
        self._start_connection()
        factory = self.factory
        self.sendMessage(v2.encode(v2.Hello("subscribe", heartbeat=_as_written(factory.heartbeat))))
        self._hello_timer = factory.clock.callLater(factory.hello_timeout, self._no_welcome)

    # -- negotiation ---------------------------------------------------------------------

    def _no_welcome(self) -> None:
        self._hello_timer = None
        self._use_v1(f"no answer to hello within {self.factory.hello_timeout:g} s (--hello-timeout)")

    def _use_v1(self, why: str) -> None:
        self._cancel_hello_timer()
        self.mode = "v1"
        self.peer_log.info(
            "{peer} does not stream readings ({why}): polling it with {command!r} every {interval:g} s "
            "instead.{stored}",
            key="v1 servers", peer=self.peer, why=why, command=self.factory.command,
            interval=self.factory.interval,
            stored=" Replies are stored as plain messages, without sequence numbers." if self.factory.store else "",
        )  # fmt: skip
        self._start_polling()

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def messageFromServer(self, text: str) -> None:
        if self.mode == "v1":
            super().messageFromServer(text)
        elif self.mode == "v2":
            self._stream_message(text)
        elif self.mode == "opening":
            return  # (nothing comes before our subscribe)
        elif text.split(" ", 1)[0] == "welcome":
            self._welcomed(text)
        elif text.split(" ", 1)[0] == "refused":
            self._cancel_hello_timer()
            try:
                reason = v2.parse(text).reason
            except v2.FrameError:
                reason = text[8:200]
            self._give_up(f"it refused to stream: {reason}")
        elif text.startswith("error:"):
            self._use_v1(f"it said {text!r}")
        else:
            self._use_v1(f"it answered hello with {text[:80]!r}")

    def _welcomed(self, text: str) -> None:
        self._cancel_hello_timer()
        try:
            welcome = v2.parse(text)
            if welcome.device is None or welcome.stream is None:
                raise v2.FrameError("welcome: a server's welcome must name its device and stream")
        except v2.FrameError as e:
            self._use_v1(f"its welcome cannot be used: {e}")
            return
        self.mode = "opening"
        self.welcome = welcome
        factory = self.factory
        opening = factory.registry.open(welcome.device, welcome.stream, owner_tag(welcome.owner))
        Deferred.fromCoroutine(opening).addCallbacks(self._opened, self._not_opened)

    def _opened(self, state: StreamState) -> None:
        if self.transport.disconnecting or self.mode != "opening":
            return
        factory, welcome = self.factory, self.welcome
        known = state.stored > 0 or state.digest is not None
        after = state.stored if known or factory.store is not None else None
        self.mode = "v2"
        interval = welcome.heartbeat or factory.heartbeat
        self.link = StreamLink(self._send, factory.clock, interval, self._dead if interval else None,
                               self._problem, self._error)  # fmt: skip
        if after is not None:
            self.link.attach(self._receiver(state))
        self._send(v2.encode(v2.Subscribe(after, state.digest if after is not None else None)))

    def _not_opened(self, failure: Failure) -> None:
        if self.transport.disconnecting:
            return
        if failure.check(Refusal):
            self._give_up(f"{failure.getErrorMessage()} (the server's welcome named another owner)")
        else:
            self._give_up(f"cannot tell where its stream stands in the store ({failure.getErrorMessage()})")

    def _receiver(self, state: StreamState) -> Receiver:
        factory, welcome = self.factory, self.welcome
        store = factory.store
        return Receiver(
            factory.registry, state, factory.delivery, self._send, self._close, factory.clock, factory.stamp,
            self.peer, None, None, factory.stream_log,
            entry_at=None if store is None else lambda seq: store.entry(welcome.device, welcome.stream, seq),
        )  # fmt: skip

    # -- the stream ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if data and self.link is not None:
            self.link.heard()
        super().dataReceived(data)

    def _send(self, text: str) -> None:
        if self.transport.disconnecting:
            return
        self.sendMessage(text)
        if self.link is not None and self.link.heartbeat is not None:
            self.link.heartbeat.sent()

    def _stream_message(self, text: str) -> None:
        if text.startswith(("reading ", "reading{")):
            try:
                frame = v2.parse(text)
            except v2.FrameError as e:
                self._problem(str(e))
                return
            if frame.snapshot:
                if frame.stream == self.welcome.stream:
                    self.factory.snapshot(replace(frame, device=self.welcome.device, peer=self.peer,
                                                  received=self.factory.stamp(), snapshot=True))  # fmt: skip
                return
            if self.link.side is None:
                # A live view: the stream starts for us at its first entry after the snapshot.
                state = self.factory.registry.begin(self.welcome.device, self.welcome.stream, frame.first - 1)
                self.link.attach(self._receiver(state))
        elif text.startswith("gap ") and self.link.side is None:
            try:
                frame = v2.parse(text)
            except v2.FrameError as e:
                self._problem(str(e))
                return
            state = self.factory.registry.begin(self.welcome.device, self.welcome.stream, frame.first - 1)
            self.link.attach(self._receiver(state))
        self.link.message(text)

    def _problem(self, what: str) -> None:
        # Not answered with an error line: the server could take it for a command and answer.
        self.peer_log.warn(
            "{peer} sent a frame this client cannot use ({error}); ignored.",
            key="malformed v2 frames", peer=self.peer, error=what,
        )  # fmt: skip

    def _error(self, text: str) -> None:
        self.peer_log.warn(
            "{peer} said {text!r} about the stream.", key="stream errors", peer=self.peer, text=text[:300]
        )

    def _close(self, reason: str) -> None:
        """The receiver ends the connection (out of order, a failed store): reconnect and resume."""
        if "could not store" in reason:
            self._give_up(
                f"{reason}. Check the disk and the store file; the Pi keeps the readings and sends "
                "them again"
            )
            return
        self.peer_log.warn(
            "Closing the stream from {peer}: {reason}; reconnecting to resume.",
            key="streams closed", peer=self.peer, reason=reason,
        )  # fmt: skip
        self.transport.loseConnection()

    def _give_up(self, reason: str) -> None:
        """Close, and wait before the next try (as after a refusal): trying at once would fail again."""
        self._gave_up = reason
        self.parting_error = reason  # (the reconnecting client backs off after a refusal)
        self.peer_log.error(
            "Stopped following {peer}: {reason}.", key="streams given up", peer=self.peer, reason=reason
        )
        self.transport.loseConnection()

    def _dead(self, seconds: float) -> None:
        self.peer_log.warn(
            "Nothing from {peer} for {seconds:g} s (3 heartbeats): the link looks dead; reconnecting.",
            key="dead servers", peer=self.peer, seconds=seconds,
        )  # fmt: skip
        self.transport.abortConnection()

    # -- v1 replies, stored when there is a store -------------------------------------------

    def _replied(self, text: str) -> None:
        super()._replied(text)
        store = self.factory.store
        if store is not None:
            record = Record(self.factory.stamp(), self.peer, text)
            store.append(record).addErrback(self._reply_not_stored, record)

    def _reply_not_stored(self, failure: Failure, record: Record) -> None:
        self.peer_log.error(
            "Could not store the reply from {peer} ({text!r}): {error}. Check the disk and the store file.",
            key="replies not stored", peer=record.peer, text=record.message, error=failure.getErrorMessage(),
        )  # fmt: skip

    def connectionLost(self, reason: Failure) -> None:
        self._cancel_hello_timer()
        if self.link is not None:
            self.link.stop()
        if self._gave_up is not None:
            self.parting_error = None  # (said above; the base would say the server said it)
        super().connectionLost(reason)



#: Stored readings logged one by one per window, per stream (then a count of the rest).
READING_LINES = 20
READING_WINDOW = 60.0


class SubscribeFactory(PollFactory):
    """
    Builds L{SubscribeProtocol}s; keeps what outlives one connection: the
    streams' high-water marks (from the store, or of this process), the
    store, the rate-limited logs.

    @param store: where readings are stored (C{--store}); C{None}: only logged.
    @param heartbeat: the interval announced in hello; C{None}: none announced.
    @param hello_timeout: seconds to wait for the welcome before polling with v1.
    @param on_reading: called with each reading (see L{Delivery}); snapshot
        readings (C{snapshot=True}) too, at once, their results not waited for.
    @param on_gap: called with each gap once it is stored.
    """

    protocol = SubscribeProtocol

    def __init__(
        self,
        clock,
        command: str = "go",
        interval: float = 2.0,
        timeout: float = 10.0,
        on_reply=None,
        store: StoreService | None = None,
        heartbeat: float | None = None,
        hello_timeout: float = 3.0,
        on_reading: OnReading | None = None,
        on_gap: OnGap | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock, command, interval, timeout, on_reply)
        self.store = store
        self.heartbeat = heartbeat
        self.hello_timeout = hello_timeout
        self.on_reading = on_reading
        self._registry: StreamRegistry | None = None
        self._delivery = Delivery(store, on_reading, on_gap)
        self.stream_log = RateLimitedLog(clock, _log)
        self.stamp = Stamp(wall)
        self._reading_log = RateLimitedLog(clock, _log, burst=READING_LINES, window=READING_WINDOW)
        self._clock_notes = ClockNotes()

    @property
    def registry(self) -> StreamRegistry:
        """The streams this client knows (where each stands is asked from the store at each welcome)."""
        if self._registry is None:
            self._registry = StreamRegistry(self.store)
        return self._registry

    def delivery(self, records: list[Entry]) -> Deferred:
        return self._delivery.many(records).addCallback(self._shown, records)

    def _shown(self, result, records: list[Entry]):
        for record in records:
            if isinstance(record, Reading):
                self._clock_notes.note(record)
                if self.store is None:  # the log is the view: every reading
                    _log.info("{line}", line=describe(record), reading=record)
                else:
                    self._reading_log.info("Stored {line}", key="stored readings", line=describe(record))
        return result

    def snapshot(self, record: Reading) -> None:
        """A snapshot reading: shown (never stored), and given to the embedding program."""
        self._clock_notes.note(record)
        _log.info("{line}", line=describe(record), reading=record)
        if self.on_reading is not None:
            maybeDeferred(self.on_reading, record).addErrback(
                lambda failure: _log.failure("The on_reading callback failed for a snapshot reading", failure)
            )
