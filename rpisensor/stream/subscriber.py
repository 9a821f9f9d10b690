"""
The subscribing side of C{serve}'s stream (C{poll --subscribe}), once the
server's C{welcome} named its device and stream: where to start, then each
entry through the same L{StreamReceiver} (order, dedupe, acks after the
store's commit) and the same store as C{collect}.

Where to start:
  - the store (or, without one, this process's memory) has entries of that
    stream: C{subscribe {"after": H}}, the entries since, then live ones;
  - with a store, a stream new to it: C{subscribe {"after": 0}}, the whole
    history the Pi still holds (a gap record for what it no longer does);
  - without a store, a stream new to it: C{subscribe {}}, a live view: each
    input's current state (marked snapshot: shown, never stored), then changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.internet.defer import Deferred

from rpisensor.lograte import RateLimitedLog
from rpisensor.stream.receiver import StreamReceiver, StreamRegistry
from rpisensor.entries import Reading, Entry
from rpisensor.wire import v2


class StreamBehind(ValueError):
    """The store has more of the stream than the server holds: its journal was restored from an old copy."""


class Subscription:
    """
    One connection's subscription, from the server's welcome on.

    @param keep: whether entries are stored (C{--store}): a stream new to the
        store is then fetched from its start, not viewed live.
    @param store: C{store(record) -> Deferred} firing once the record is
        durable (a L{rpisensor.stream.delivery.Delivery}).
    @param send: sends the text of one frame to the server (acks).
    @param close: ends the connection, with the reason (an C{error: ...} text) to log.
    @param snapshot: called with each snapshot reading (the state at subscribe).
    """

    def __init__(
        self,
        registry: StreamRegistry,
        welcome: v2.Welcome,
        keep: bool,
        store: Callable[[Entry], Deferred],
        send: Callable[[str], None],
        close: Callable[[str], None],
        clock,
        stamp: Callable[[], str],
        peer: str,
        snapshot: Callable[[Reading], object],
        log: RateLimitedLog | None = None,
    ) -> None:
        self._registry = registry
        self.device, self.stream = welcome.device, welcome.stream
        self._hello = v2.Hello("subscribe", welcome.device, welcome.stream, last=welcome.last)
        self._store = store
        self._send = send
        self._close = close
        self._clock = clock
        self._stamp = stamp
        self.peer = peer
        self._snapshot = snapshot
        self._log = log
        self.receiver: StreamReceiver | None = None
        state = registry.get(self.device, self.stream)
        if state is not None:
            if state.stored > (welcome.last or 0):
                raise StreamBehind(
                    f"this store has entries up to {state.stored} of stream {self.stream} of "
                    f"{self.device}, but the Pi's journal ends at {welcome.last or 0}: was the "
                    "journal restored from an old copy? Its entries would repeat numbers already "
                    "stored; move the Pi's journal file away so it starts a new stream."
                )
            self.after: int | None = state.stored
        else:
            self.after = 0 if keep else None
        if self.after is not None:
            self.receiver = self._receiver()

    def subscribe_frame(self) -> str:
        """What to send now: C{subscribe} with where to start."""
        return v2.encode(v2.Subscribe(self.after))

    def _receiver(self) -> StreamReceiver:
        return StreamReceiver(
            self._registry, self._hello, self._store, self._send, self._close, self._clock, self._stamp,
            self.peer, None, self._log,
        )  # fmt: skip

    def receive(self, frame: v2.Reading | v2.Gap) -> None:
        """One entry from the server."""
        if isinstance(frame, v2.Reading) and frame.snapshot:
            if frame.stream == self.stream:
                self._snapshot(self._as_record(frame, snapshot=True))
            return
        if self.receiver is None:
            # A live view: the stream starts for us at its first entry after the snapshot.
            first = frame.seq if isinstance(frame, v2.Reading) else frame.first
            self._registry.begin(self.device, self.stream, first - 1)
            self.receiver = self._receiver()
        self.receiver.receive(frame)

    def _as_record(self, frame: v2.Reading, snapshot: bool) -> Reading:
        return replace(frame, device=self.device, peer=self.peer, received=self._stamp(), snapshot=snapshot)

    def connection_lost(self) -> None:
        if self.receiver is not None:
            self.receiver.connection_lost()
