"""
The receiving side of v2 streams: each stream's high-water marks, and the
per-connection logic that checks the order of what arrives, hands it to the
store, and acknowledges only what the store has made durable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from rpisensor.lograte import RateLimitedLog
from rpisensor.entries import Entry
from rpisensor.wire import v2


@dataclass
class StreamState:
    """
    One stream as the receiver knows it.

    @ivar stored: every entry up to this seq is durably stored.
    @ivar accepted: every entry up to this seq is stored or on its way to the store.
    """

    device: str
    stream: str
    stored: int = 0
    accepted: int = 0
    session: object = field(default=None, repr=False)


class StreamRegistry:
    """The streams a receiver has seen, from the store's high-water marks at start."""

    def __init__(self, high_waters: Mapping[tuple[str, str], int] = {}) -> None:
        self._streams = {
            key: StreamState(key[0], key[1], high, high) for key, high in high_waters.items()
        }

    def claim(self, device: str, stream: str, session) -> StreamState:
        """
        The state of C{(device, stream)} for C{session}; a session that had it
        (a connection the sender gave up on, maybe half-open) is closed.
        """
        state = self._streams.get((device, stream))
        if state is None:
            state = self._streams[device, stream] = StreamState(device, stream)
        previous, state.session = state.session, session
        if previous is not None and previous is not session:
            previous.replaced()
        return state

    def release(self, state: StreamState, session) -> None:
        if state.session is session:
            state.session = None

    def get(self, device: str, stream: str) -> StreamState | None:
        return self._streams.get((device, stream))

    def begin(self, device: str, stream: str, after: int) -> None:
        """
        A stream first seen part way (a live view, which starts at the
        server's newest entry): its entries up to C{after} count as had.
        """
        if (device, stream) not in self._streams:
            self._streams[device, stream] = StreamState(device, stream, after, after)

    def __iter__(self):
        return iter(list(self._streams.values()))


class SequenceError(Exception):
    """An entry arrived out of order: the connection must close so the sender replays."""


class StreamReceiver:
    """
    One connection's stream.

    @param store: C{store(record) -> Deferred} firing once the record is
        durable; C{None} with a C{store_batch}.
    @param store_batch: C{store_batch(records) -> Deferred} firing once all of
        C{records} are durable. With it, the entries taken between L{hold} and
        L{flush} (e.g. all the frames of one read from the socket) go to the
        store as one list, acknowledged together: one Deferred per batch
        instead of one per entry. Without it, every entry goes to C{store}.
    @param send: sends the text of one frame back.
    @param close: closes the connection, after C{send}ing an C{error:} line.
    @param stamp: the receiver's time now, as a frame timestamp.
    @param log: where the lines about the stream go (resumed, replayed, gaps),
        rate-limited per stream, so a flapping link cannot flood the log; shared
        by a receiver's connections. By default, straight to the logger.
    """

    _log = Logger()

    def __init__(
        self,
        registry: StreamRegistry,
        hello: v2.Hello,
        store: Callable[[Entry], Deferred] | None,
        send: Callable[[str], None],
        close: Callable[[str], None],
        clock,
        stamp: Callable[[], str],
        peer: str,
        identity: str | None = None,
        log: RateLimitedLog | None = None,
        store_batch: Callable[[list[Entry]], Deferred] | None = None,
    ) -> None:
        self._registry = registry
        self._store_batch = store_batch
        #: Entries taken since L{hold}, not yet handed to the store, and the last seq they cover.
        self.pending: list[Entry] = []
        self._pending_last = 0
        self._holding = False
        self._store_broke = False
        self._stream_log = log
        self._store = store
        self._send = send
        self._close = close
        self._clock = clock
        self._stamp = stamp
        self.peer = peer
        self.identity = identity
        self.state = registry.claim(hello.device, hello.stream, self)
        self.device, self.stream = hello.device, hello.stream
        self.resumed_after = self.state.stored
        self.replay_until = hello.last
        self.received = 0
        self.duplicates = 0
        self._acked = self.state.stored
        self._ack_call = None
        self.closed = False
        self._say(
            LogLevel.info, "resuming",
            "Device {device}, stream {stream} from {peer}: resuming after seq {seq}{replay}.",
            device=self.device, stream=self.stream, peer=peer, seq=self.state.stored,
            replay=self._replay_text(),
        )  # fmt: skip

    def _say(self, level: LogLevel, what: str, format: str, **fields) -> None:
        if self._stream_log is None:
            self._log.emit(level, format, **fields)
        else:
            self._stream_log.emit(level, format, key=f"{what}: {self.device} {self.stream}", **fields)

    def _replay_text(self) -> str:
        if self.replay_until is None or self.replay_until <= self.state.stored:
            return ""
        return f"; {self.replay_until - self.state.stored} readings to replay"

    def welcome(self) -> v2.Welcome:
        return v2.Welcome(acked=self.state.stored)

    def receive(self, frame: v2.Reading | v2.Gap) -> None:
        """Take one entry off the wire, in order, or close the connection saying why."""
        if self.closed:
            return
        try:
            self._receive(frame)
        except SequenceError as e:
            self.flush()  # what came before the bad entry is in order: it is stored
            self.closed = True
            self._close(f"error: {e}")

    def hold(self) -> None:
        """Keep the entries taken from now on until L{flush} (with a C{store_batch})."""
        self._holding = self._store_batch is not None

    def flush(self) -> None:
        """Hand the entries held to the store, as one batch, and stop holding."""
        self._holding = False
        if not self.pending:
            return
        records, self.pending = self.pending, []
        if self._store_broke:
            return  # after a failed write nothing more is stored: the sender replays from the last ack
        self._store_batch(records).addCallbacks(self._stored, self._store_failed, (self._pending_last,))

    def _receive(self, frame: v2.Reading | v2.Gap) -> None:
        if frame.stream != self.stream:
            raise SequenceError(f"an entry of stream {frame.stream} on the connection of stream {self.stream}")
        state = self.state
        if isinstance(frame, v2.Reading):
            first = last = frame.seq
        else:
            first, last = frame.first, frame.last
        if last <= state.accepted:
            self.duplicates += 1
            self._schedule_ack()
            return
        if first > state.accepted + 1:
            raise SequenceError(
                f"entry {first} out of order, expected {state.accepted + 1}; reconnect and send from "
                f"{state.stored + 1}"
            )
        record = self._record(frame, state.accepted + 1)
        state.accepted = last
        self.received += 1
        if self._holding:
            self.pending.append(record)
            self._pending_last = last
        elif self._store_batch is not None:
            self._store_batch([record]).addCallbacks(self._stored, self._store_failed, (last,))
        else:
            self._store(record).addCallbacks(self._stored, self._store_failed, (last,))
        if self.replay_until is not None and first <= self.replay_until <= last:
            self._say(
                LogLevel.info, "replayed",
                "Device {device}, stream {stream}: replayed {count} entries, now live at seq {seq}.",
                device=self.device, stream=self.stream, count=self.replay_until - self.resumed_after,
                seq=self.replay_until,
            )  # fmt: skip

    def _record(self, frame: v2.Reading | v2.Gap, expected: int) -> Entry:
        received = self._stamp()
        if isinstance(frame, v2.Reading):
            return replace(frame, device=self.device, peer=self.peer, received=received, identity=self.identity)
        first = max(frame.first, expected)
        self._say(
            LogLevel.warn, "gap",
            "Device {device}, stream {stream}: entries {first} to {last} will never arrive: {reason}.",
            device=self.device, stream=self.stream, first=first, last=frame.last, reason=frame.reason,
        )  # fmt: skip
        return replace(
            frame, first=first, device=self.device, peer=self.peer, received=received, identity=self.identity
        )

    def _stored(self, _, last: int) -> None:
        self.state.stored = max(self.state.stored, last)
        # The session that has the stream now acknowledges it: a newer
        # connection that took over waits for what this one was storing.
        current = self.state.session
        (current if current is not None else self)._schedule_ack()

    def _store_failed(self, failure: Failure) -> None:
        # What was accepted but not stored must come again: close, and the
        # sender replays from the last acknowledged entry.
        self._store_broke = True
        self.pending = []
        self.state.accepted = self.state.stored
        if not self.closed:
            self.closed = True
            self._close(f"error: the collector could not store the reading ({failure.getErrorMessage()})")

    def _schedule_ack(self) -> None:
        # One ack per reactor turn, for everything stored by then: cumulative.
        if self._ack_call is None and not self.closed:
            self._ack_call = self._clock.callLater(0, self._send_ack)

    def _send_ack(self) -> None:
        self._ack_call = None
        if self.closed:
            return
        if self.state.stored > self._acked or self.duplicates:
            self._acked = self.state.stored
            self._send(v2.encode(v2.Ack(self._acked)))
            self.duplicates = 0

    def replaced(self) -> None:
        """A newer connection took this stream over."""
        self.flush()  # entries this one took are stored; the newer one acknowledges them
        if not self.closed:
            self.closed = True
            self._close("error: a newer connection for this stream took over")

    def connection_lost(self) -> None:
        self.flush()  # whole entries received are stored, even at a close
        self.closed = True
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        self._ack_call = None
        self._registry.release(self.state, self)
