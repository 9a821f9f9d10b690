"""
The receiving side of streams: the streams a receiver knows (L{StreamRegistry}:
where each stands, who owns it, which connection has it), and one
connection's L{Receiver}, which checks the order of what arrives, hands it to
the store, acknowledges only what the store made durable, and answers the
sender's probes.

A stream belongs to the first sender that claimed it: by the secret its
journal made with the stream (C{owner} in the hello, kept as a hash), or by
its client certificate where the listener requires one. Anyone else naming
the stream is refused before a byte of it is taken: no stranger can take a
stream over, or push a gap through it. A copy of the journal (a cloned SD
card) holds the same secret; the log-matching check tells it apart (see
L{rpisensor.stream.sender}).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from rpisensor.entries import Entry, Reading
from rpisensor.lograte import RateLimitedLog
from rpisensor.store.record import Standing
from rpisensor.wire import v2

#: Idle streams a registry remembers at most (the store remembers them all).
MAX_IDLE_STREAMS = 10_000


def owner_tag(secret: str | None, certificate: str | None = None) -> str | None:
    """
    Who a sender is, as a stream's owner is kept: its certificate's CN where
    one is required, else a hash of the secret it sent (a store never holds
    the secret itself); C{None} for a sender that sent none (an older version).
    """
    if certificate is not None:
        return f"cert:{certificate}"
    if secret is not None:
        return "key:" + hashlib.sha256(secret.encode()).hexdigest()[:32]
    return None


class Refusal(Exception):
    """A stream may not be opened by this sender; the message says why (the C{refused} frame's reason)."""


@dataclass
class StreamState:
    """
    One stream as the receiver knows it.

    @ivar stored: every entry up to this seq is durably stored; C{digest} is the chain through it.
    @ivar accepted: every entry up to this seq is stored or on its way to the store.
    @ivar owner: who may send it (L{owner_tag}), C{None} until claimed.
    @ivar session: the connection's L{Receiver} that has it now, if any.
    """

    device: str
    stream: str
    stored: int = 0
    digest: str | None = None
    accepted: int = 0
    owner: str | None = None
    session: object = field(default=None, repr=False)
    #: Whether the store was asked since this process knew the stream (a stream
    #: only listed at start, for the page, is asked before anyone may send it).
    checked: bool = False

    def learn(self, standing: Standing) -> None:
        """What the store says: a position is only ever raised, never lowered; an owner kept."""
        if standing.stored > self.stored or (standing.stored == self.stored and self.digest is None):
            self.stored = standing.stored
            self.digest = standing.digest
            self.accepted = max(self.accepted, standing.stored)
        if self.owner is None:
            self.owner = standing.owner


class StreamRegistry:
    """
    The streams a receiver knows, asked at each hello. Where a stream stands
    comes from the store (the truth, which another collector sharing a
    database may have moved meanwhile), or from memory without one. Streams no
    connection has are forgotten beyond C{max_idle}, oldest first: the store
    remembers them, so a registry's memory is bounded however many streams say hello.
    """

    def __init__(self, store=None, max_idle: int = MAX_IDLE_STREAMS) -> None:
        self._store = store
        self.max_idle = max_idle
        self._streams: OrderedDict[tuple[str, str], StreamState] = OrderedDict()
        if store is not None:
            # The streams the store held when it opened, for the page; each is asked again at its hello.
            for (device, stream), stored in list(store.high_waters().items())[-max_idle:]:
                self._streams[device, stream] = StreamState(device, stream, stored, None, stored)

    async def open(self, device: str, stream: str, owner: str | None) -> StreamState:
        """
        The state of C{(device, stream)}, as the store says now, claimed for
        C{owner} if nobody has (a L{Receiver} then L{take}s it).

        @raise Refusal: the stream belongs to another sender.
        """
        key = (device, stream)
        state = self._streams.get(key)
        store = self._store
        if store is not None and (state is None or not state.checked or (store.shared and state.session is None)):
            standing = await store.standing(device, stream)
            state = self._streams.get(key)  # (another hello may have come meanwhile)
        else:
            standing = None
        if state is None:
            state = self._streams[key] = StreamState(device, stream)
        if standing is not None:
            state.learn(standing)
        state.checked = True
        self._streams.move_to_end(key)
        if state.owner is None and owner is not None:
            state.owner = await store.claim(device, stream, owner) if store is not None else owner
        if state.owner is not None and owner != state.owner:
            raise Refusal(
                f"stream {stream} of device {device} belongs to another sender"
                + (" (this one sent no owner secret: an older rpisensor?)" if owner is None else "")
                + "; a reporter makes its stream with its outbox, so give each Pi its own outbox"
            )
        self._forget_idle()
        return state

    def take(self, state: StreamState, session) -> None:
        """
        C{session} has the stream now; one that had it (a connection the
        sender gave up on, maybe half-open) is told it was L{Receiver.replaced}.
        """
        previous, state.session = state.session, session
        if previous is not None and previous is not session:
            previous.replaced()

    def begin(self, device: str, stream: str, after: int) -> StreamState:
        """
        A stream first seen part way (a live view, which starts at the
        server's newest entry): its entries up to C{after} count as had.
        """
        state = self._streams.get((device, stream))
        if state is None:
            state = self._streams[device, stream] = StreamState(device, stream, after, None, after)
        elif state.stored == state.accepted == 0:
            state.stored = state.accepted = after
        return state

    def release(self, state: StreamState, session) -> None:
        if state.session is session:
            state.session = None

    def get(self, device: str, stream: str) -> StreamState | None:
        return self._streams.get((device, stream))

    def _forget_idle(self) -> None:
        idle = len(self._streams) - self.max_idle
        if idle <= 0:
            return
        for key in [key for key, state in self._streams.items() if state.session is None][:idle]:
            del self._streams[key]

    def __iter__(self):
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)


class SequenceError(Exception):
    """An entry arrived out of order, or beyond what was announced: the connection must close."""


class Receiver:
    """
    One connection's stream, once its L{StreamState} was opened.

    @param store_batch: C{store_batch(entries) -> Deferred} firing once all of
        C{entries} are durable. The entries taken between L{hold} and L{flush}
        (e.g. all the frames of one read from the socket) go as one list,
        acknowledged together, and count as received at the L{hold}; outside
        that, each goes alone, received when it is taken.
    @param entry_at: C{entry_at(seq) -> Deferred[(first, last, digest) | None]},
        the stored entry covering a seq (for probes), or C{None} without a store.
    @param announced: the last seq the sender announced (its hello's or its
        welcome's C{last}): a gap reaching beyond it is refused (a stranger's
        gap to C{MAX_SEQ} would end the stream for good).
    @param send: sends the text of one frame back.
    @param close: closes the connection, after C{send}ing an C{error:} line.
    @param stamp: the receiver's time now, as a frame timestamp.
    @param log: where the lines about streams go (resumed, replayed, gaps),
        rate-limited by kind (never by a stream a peer names): shared by a
        receiver's connections, so a flapping link cannot flood the log.
    """

    _log = Logger()

    def __init__(
        self,
        registry: StreamRegistry,
        state: StreamState,
        store_batch: Callable[[list[Entry]], Deferred],
        send: Callable[[str], None],
        close: Callable[[str], None],
        clock,
        stamp: Callable[[], str],
        peer: str,
        announced: int | None = None,
        identity: str | None = None,
        log: RateLimitedLog | None = None,
        entry_at: Callable[[int], Deferred] | None = None,
    ) -> None:
        self._registry = registry
        self.state = state
        self._store_batch = store_batch
        self._entry_at = entry_at
        #: Entries taken since L{hold}, not yet handed to the store, and the last seq they cover.
        self.pending: list[Entry] = []
        self._pending_last = 0
        self._holding = False
        #: When the entries taken while holding were received (the stamp at L{hold}).
        self._held_at = ""
        self._store_broke = False
        self._stream_log = log
        self._send = send
        self._close = close
        self._clock = clock
        self._stamp = stamp
        self.peer = peer
        self.identity = identity
        self.device, self.stream = state.device, state.stream
        self.resumed_after = state.stored
        self.announced = announced
        self.received = 0
        self.duplicates = 0
        self._acked = state.stored
        self._ack_call = None
        self.closed = False
        registry.take(state, self)
        self._say(
            LogLevel.info, "resuming",
            "Device {device}, stream {stream} from {peer}: resuming after seq {seq}{replay}.",
            device=self.device, stream=self.stream, peer=peer, seq=state.stored, replay=self._replay_text(),
        )  # fmt: skip

    def _say(self, level: LogLevel, what: str, format: str, **fields) -> None:
        if self._stream_log is None:
            self._log.emit(level, format, **fields)
        else:
            self._stream_log.emit(level, format, key=what, **fields)

    def _replay_text(self) -> str:
        if self.announced is None or self.announced <= self.state.stored:
            return ""
        return f"; {self.announced - self.state.stored} readings to replay"

    @property
    def position(self) -> tuple[int, str | None]:
        """Where this receiver stands: the last seq stored, the chain's digest through it."""
        return self.state.stored, self.state.digest

    def receive(self, frame: Entry) -> None:
        """Take one entry off the wire, in order, or close the connection saying why."""
        if self.closed:
            return
        try:
            self._receive(frame)
        except SequenceError as e:
            self.flush()  # what came before the bad entry is in order: it is stored
            self.closed = True
            self._close(f"error: {e}")

    def receive_reading(self, reading: Reading) -> None:
        """L{receive} a reading: the next one of this stream (nearly every one) takes a shorter way."""
        if (
            reading.seq == self.state.accepted + 1 and reading.stream == self.stream
            and not reading.snapshot and not self.closed
        ):  # fmt: skip
            self._take(reading, reading.seq, reading.seq)
        else:
            self.receive(reading)

    def hold(self) -> None:
        """
        Keep the entries taken from now on until L{flush}; they are received
        now (the frames of one read from the socket arrived at one moment).
        """
        self._holding = True
        self._held_at = self._stamp()

    def flush(self) -> None:
        """Hand the entries held to the store, as one batch, and stop holding."""
        self._holding = False
        if not self.pending:
            return
        records, self.pending = self.pending, []
        if self._store_broke:
            return  # after a failed write nothing more is stored: the sender replays from the last ack
        self._store_batch(records).addCallbacks(self._stored, self._store_failed, (self._pending_last, records[-1]))

    def _receive(self, frame: Entry) -> None:
        if frame.stream != self.stream:
            raise SequenceError(f"an entry of stream {frame.stream} on the connection of stream {self.stream}")
        if frame.__class__ is Reading and frame.snapshot:
            raise SequenceError(
                f"entry {frame.seq} is marked \"snapshot\":true, which only a live view's first readings are; "
                "a stream carries its entries as they were recorded"
            )
        state = self.state
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
        if frame.__class__ is not Reading:
            if self.announced is not None and last > self.announced:
                raise SequenceError(
                    f"a gap to {last}, beyond the last entry announced in the hello ({self.announced}); a "
                    "sender announces such a gap in the hello of a new connection"
                )
            frame.first = max(first, state.accepted + 1)
            self._say(
                LogLevel.warn, "gap",
                "Device {device}, stream {stream}: entries {first} to {last} will never arrive: {reason}.",
                device=self.device, stream=self.stream, first=frame.first, last=last, reason=frame.reason,
            )  # fmt: skip
        self._take(frame, first, last)

    def _take(self, entry: Entry, first: int, last: int) -> None:
        """
        Take C{entry}, the next one (C{first} to C{last}, counted from where
        the stream was), filled in as it is stored: who sent it, when it came.
        """
        entry.device, entry.peer, entry.identity = self.device, self.peer, self.identity
        self.state.accepted = last
        self.received += 1
        if self._holding:
            entry.received = self._held_at
            self.pending.append(entry)
            self._pending_last = last
        else:
            entry.received = self._stamp()
            self._store_batch([entry]).addCallbacks(self._stored, self._store_failed, (last, entry))
        announced = self.announced
        if announced is not None and first <= announced <= last and announced > self.resumed_after:
            self._say(
                LogLevel.info, "replayed",
                "Device {device}, stream {stream}: replayed {count} entries, now live at seq {seq}.",
                device=self.device, stream=self.stream, count=announced - self.resumed_after, seq=announced,
            )  # fmt: skip

    def _stored(self, _, last: int, entry: Entry) -> None:
        state = self.state
        if last > state.stored:
            state.stored = last
            state.digest = entry.digest or None
        # The session that has the stream now acknowledges it: a newer
        # connection that took over waits for what this one was storing.
        current = state.session
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

    def last(self, frame: v2.Last) -> None:
        """The sender says how far its journal reaches now: a gap may reach that far."""
        if self.announced is not None:
            self.announced = max(self.announced, frame.seq)

    def probe(self, probe: v2.Probe) -> None:
        """Answer the sender's probe with the stored entry covering its seq (C{match})."""
        seq = probe.seq
        if seq == self.state.stored and self.state.digest is not None:
            answer = succeed((seq, seq, self.state.digest))
        elif self._entry_at is not None and 0 < seq <= self.state.stored:
            answer = self._entry_at(seq)
        else:
            answer = succeed(None)
        answer.addCallbacks(self._matched, self._match_failed, (seq,), None, (seq,))

    def _matched(self, entry, seq: int) -> None:
        if not self.closed:
            last, digest = (entry[1], entry[2]) if entry is not None else (None, None)
            self._send(v2.encode(v2.Match(seq, last, digest)))

    def _match_failed(self, failure: Failure, seq: int) -> None:
        self._say(
            LogLevel.warn, "probe failures",
            "Could not look up entry {seq} of stream {stream} for its sender: {error}; answered that it "
            "is not held.",
            seq=seq, stream=self.stream, error=failure.getErrorMessage(),
        )  # fmt: skip
        self._matched(None, seq)

    def replaced(self) -> None:
        """A newer connection (of the same owner) took this stream over."""
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
