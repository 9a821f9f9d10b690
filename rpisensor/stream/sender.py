"""
The sending side of a stream over one connection.

It starts from where the receiver says it stands (a L{Position}: the last
seq it stored and the chain's digest through it), checked against the
journal: equal numbers must mean equal entries (the log-matching check, see
L{rpisensor.stream.chain}). Then it replays what the receiver does not have
yet, keeps at most C{window} entries unacknowledged, sends new entries as soon
as they are committed, and stops while the transport is paused. Entries always
come from the journal, so nothing is sent that a crash could take back.

Where the two disagree, this journal is a copy that went its own way: an SD
card restored from an older image, or cloned to another Pi, whose receiver
stored entries under the same numbers from the original. Retrying until the
numbers overlap would drop this copy's entries as duplicates, or store them
over the original's. Instead the sender asks the receiver (C{probe}, answered
C{match}) for the last entry the two still agree on, and the journal goes on as
a new stream that carries every entry after it (L{JournalService.fork}): the
receiver stores them under the new stream, and nothing is lost or doubled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from rpisensor.entries import Entry, Gap, Reading
from rpisensor.stream.journal import Forked
from rpisensor.stream.journal_service import ForkRefused, JournalService
from rpisensor.wire import v2

#: The most frames given to the connection in one write (about 50 KB of readings): enough
#: that a replay costs one write per batch, not per entry, few enough that a transport
#: that fills up pauses the sender before its buffer holds much more than its own size.
SEND_BATCH = 256
#: Why entries a subscriber asked for are missing: serve's journal is bounded.
TRIMMED = "the Pi's journal no longer holds these (it keeps the newest --journal-max entries)"
#: Why entries a collector had stored are missing from the outbox when it asks for them again.
LOST_BY_COLLECTOR = (
    "the collector had stored these, then lost them (restored from an older backup?); this Pi had "
    "let them go once they were acknowledged (--outbox-keep keeps them longer)"
)


@dataclass(frozen=True)
class Position:
    """
    Where a receiver stands in a stream: every entry up to C{seq} is stored,
    and C{digest} is the chain's digest through it (C{None}: it cannot tell,
    say an entry sent by an older version).
    """

    seq: int
    digest: str | None = None


@dataclass(frozen=True)
class SenderRole:
    """
    What differs between the two senders: C{report}'s outbox (one receiver,
    whose acks the journal keeps) and C{serve}'s journal (many subscribers).

    @ivar receiver: how the log names the other side.
    @ivar gone: the gap's reason for entries the receiver lacks and the journal no longer holds.
    @ivar keeps_acks: the journal keeps the receiver's last ack (an outbox), so
        a receiver that went backwards is noticed.
    """

    receiver: str
    gone: str
    keeps_acks: bool


REPORT = SenderRole("the collector", LOST_BY_COLLECTOR, True)
SERVE = SenderRole("the subscriber", TRIMMED, False)


class _SearchAborted(Exception):
    """The search for where a receiver and this journal agree was cut short; nothing is decided."""


class Sender:
    """
    Sends the entries of C{journal} through C{send} (the text of one frame).

    @param window: the most entries sent and not yet acknowledged.
    @param announced: the last seq this side announced (the hello's C{last}):
        the receiver refuses a gap reaching beyond it, so a gap made since (an
        overflow, a full disk) is preceded by a C{last} frame raising it.
    @param on_end: called once, with the reason, when this connection cannot
        carry the stream on (the journal became a new stream, or a gap must be
        announced): the caller closes it, and the client reconnects at once.
    @param on_sent: called with how many readings went out, once per batch
        sent (the metrics' C{rpisensor_readings_out_total}); gaps are not counted.
    @param paused: start paused (the transport is full already).
    @param on_ack: called with each new cumulative ack, once the journal took it.
    """

    _log = Logger()

    def __init__(
        self,
        journal: JournalService,
        send: Callable[[list[str]], None],
        role: SenderRole,
        on_end: Callable[[str], None],
        window: int = 1000,
        announced: int | None = None,
        on_sent: Callable[[int], object] | None = None,
        paused: bool = False,
        on_ack: Callable[[int], object] | None = None,
    ) -> None:
        self._journal = journal
        self._send = send
        self.role = role
        self._on_end = on_end
        self.window = window
        self.announced = announced
        self._on_sent = on_sent
        self._on_ack = on_ack
        self.paused = paused
        self.stopped = False
        #: Everything up to this seq is acknowledged; entries after it go from C{next}.
        self.acked = 0
        self.next = 1
        #: How many entries were sent on this connection, replayed ones included.
        self.sent = 0
        #: Set once the log-matching check is done and entries may flow.
        self.started = False
        self._cache: dict[int, Entry] = {}
        self._fetching = False
        self._probes: dict[int, Deferred] = {}
        journal.add_listener(self._committed)
        journal.add_fork_listener(self._forked)

    @property
    def in_flight(self) -> int:
        return self.next - 1 - self.acked if self.started else 0

    # -- where to start ------------------------------------------------------------------

    def start(self, position: Position) -> Deferred[None]:
        """
        Check C{position} against the journal, then send from there; or, where
        the two went apart, make the journal a new stream and end (C{on_end}).
        Fires once that is done; its errors are logged.
        """
        d = Deferred.fromCoroutine(self._start(position))
        return d.addErrback(self._start_failed)

    async def _start(self, position: Position) -> None:
        journal = self._journal.journal
        last = journal.last
        diverged = position.seq > last
        if not diverged and position.digest is not None:
            ours = await self._journal.covering(position.seq)
            diverged = ours is not None and ours[1] == position.seq and ours[2] is not None and ours[2] != position.digest
        if self.stopped:
            return
        if diverged:
            await self._fork(position)
            return
        if self.role.keeps_acks and position.seq < journal.acked:
            self._journal.limited_log.warn(
                "{receiver} says it has stream {stream} up to seq {seq}, but it had acknowledged up to "
                "{acked}: restored from an older backup? What this Pi still holds goes again; a gap "
                "record names what it let go.",
                key="receiver went backwards", receiver=self.role.receiver.capitalize(), stream=journal.stream,
                seq=position.seq, acked=journal.acked,
            )  # fmt: skip
        self._begin(position.seq)

    def _begin(self, after: int) -> None:
        self.acked = after
        self.next = after + 1
        self.started = True
        self._journal.acknowledge(after)  # (what the receiver holds may go: it said so)
        first = self._journal.journal.first
        if first and self.next < first:
            # Entries the receiver has yet to get are no longer kept: a gap says so first.
            self._cache[self.next] = Gap(stream=self._journal.journal.stream, first=self.next, last=first - 1,
                                         reason=self.role.gone)  # fmt: skip
        self.pump()

    def _start_failed(self, failure) -> None:
        if not self.stopped:
            self._log.failure("Could not check where the receiver stands; closing the connection", failure)
            self._end("the sender failed to start (see the log)")

    # -- the log-matching check -------------------------------------------------------------

    async def _fork(self, position: Position) -> None:
        try:
            await self._fork_after_search(position)
        except _SearchAborted as e:
            self._end(f"the check of where {self.role.receiver} stands was cut short ({e}); trying again")

    async def _fork_after_search(self, position: Position) -> None:
        journal = self._journal.journal
        stream = journal.stream
        refusal = self._journal.fork_refused()
        if refusal is not None:
            self._end(
                f"{self.role.receiver} holds stream {stream} up to seq {position.seq}, which this Pi's "
                f"journal does not agree with; {refusal}"
            )
            return
        after = await self._agreed_until(max(journal.first - 1, 0), min(position.seq, journal.last))
        if self.stopped:
            return
        try:
            forked: Forked = await self._journal.fork(after)
        except ForkRefused as e:
            self._end(
                f"{self.role.receiver} holds stream {stream} up to seq {position.seq}, which this Pi's "
                f"journal does not agree with; {e}"
            )
            return
        self._log.error(
            "{receiver} holds stream {old} up to seq {seq}, and this Pi's copy of it went its own way "
            "after seq {after}: this Pi's journal was restored from an older copy, or copied to "
            "another Pi (a cloned SD card). It goes on as stream {new}, carrying the {carried} "
            "entries after {after}, so none is lost or stored over another's. Give each Pi its own "
            "SD card image (its own journal) to avoid this.",
            receiver=self.role.receiver.capitalize(), old=stream, seq=position.seq, after=after,
            new=forked.new, carried=forked.carried,
        )  # fmt: skip

    async def _agreed_until(self, low: int, high: int) -> int:
        """
        The last seq in C{low..high} through which this journal and the
        receiver hold the same entries (by their digests), found by asking the
        receiver (C{probe}); C{low} if none. The chain makes agreement hold for
        every seq before one where they agree, so a binary search finds it.
        """
        agreed = low
        while low < high:
            middle = (low + high + 1) // 2
            ours = await self._journal.covering(middle)
            theirs = await self._probe(middle)
            if ours is not None and ours[2] is not None and theirs.last == ours[1] and theirs.digest == ours[2]:
                agreed = low = max(middle, min(ours[1], high))
            else:
                high = middle - 1
        return agreed

    def _probe(self, seq: int) -> Deferred[v2.Match]:
        if self.stopped:
            return fail(_SearchAborted("the connection is gone"))
        d = self._probes.get(seq)
        if d is None:
            d = self._probes[seq] = Deferred()
            self._send([v2.encode(v2.Probe(seq))])
        return d

    def matched(self, match: v2.Match) -> None:
        """The receiver's answer to a probe."""
        d = self._probes.pop(match.seq, None)
        if d is not None:
            d.callback(match)

    def error(self, text: str) -> None:
        """
        An C{error:} line from the receiver while probes wait. A receiver too old
        to know probes (C{unknown frame 'probe'}) holds nothing this side can
        check, so the search ends where it stands and everything after is
        carried (more, rather than lose any); any other error ends the search
        without a new stream: the check is made again on the next connection.
        """
        probes, self._probes = self._probes, {}
        if not probes:
            return
        if "'probe'" in text:
            for seq, d in probes.items():
                d.callback(v2.Match(seq))
        else:
            for d in probes.values():
                d.errback(_SearchAborted(text))

    def _forked(self, forked: Forked) -> None:
        self._end(f"this Pi's stream {forked.old} goes on as stream {forked.new}; reconnecting to send it")

    def _end(self, reason: str) -> None:
        if not self.stopped:
            self.stop()
            self._on_end(reason)

    # -- sending -----------------------------------------------------------------------------

    def _committed(self, entries: list[Entry]) -> None:
        if not self.started:
            return
        for entry in entries:
            if entry.first >= self.next and len(self._cache) < 2 * self.window:
                self._cache[entry.first] = entry
        self.pump()

    def pump(self) -> None:
        """
        Send what the window, the transport and the journal allow; with the
        window full, read the next entries from the journal meanwhile, so
        that the next ack finds them at hand (a replay then never waits for
        the journal between acks).
        """
        if self.paused or self.stopped or not self.started:
            return
        last = self._journal.journal.last
        frames: list[str] = []
        readings = 0
        while self.in_flight < self.window and self.next <= last:
            entry = self._cache.pop(self.next, None)
            if entry is None:
                break
            if entry.__class__ is Gap and self.announced is not None and entry.last > self.announced:
                # Entries lost since the hello (an overflow, a full disk): say first how far the
                # journal reaches now, as a receiver refuses a gap beyond what was announced.
                self.announced = self._journal.journal.last
                frames.append(v2.encode(v2.Last(self.announced)))
            frames.append(v2.encode(entry))
            self.sent += 1
            if entry.__class__ is Reading:
                readings += 1
            self.next = entry.last + 1
            if len(frames) >= SEND_BATCH:  # (the transport may pause us meanwhile: see pause)
                self._flush(frames)
                frames = []
                if self.paused or self.stopped:
                    break
        self._flush(frames)
        if readings and self._on_sent is not None:
            self._on_sent(readings)
        if not (self.paused or self.stopped) and self.next <= last and self.next not in self._cache:
            self._fetch()

    def _flush(self, frames: list[str]) -> None:
        if frames:
            self._send(frames)

    def _fetch(self) -> None:
        if self._fetching:
            return
        self._fetching = True
        d = self._journal.after(self.next - 1, self.window)
        d.addCallbacks(self._fetched, self._fetch_failed)

    def _fetched(self, entries: list[Entry]) -> None:
        self._fetching = False
        if self.stopped:
            return
        if entries and entries[0].first > self.next:
            # The journal forgot entries this receiver has yet to get (serve's keeps
            # only the newest ones): say so, then go on after them.
            first = entries[0].first
            self._journal.limited_log.warn(
                "{receiver} fell behind: entries {first} to {last} are no longer in the journal.",
                key="receiver behind the journal", receiver=self.role.receiver.capitalize(),
                first=self.next, last=first - 1,
            )  # fmt: skip
            self._cache[self.next] = Gap(stream=self._journal.journal.stream, first=self.next, last=first - 1,
                                         reason=self.role.gone)  # fmt: skip
        for entry in entries:
            if entry.last >= self.next:
                # A gap that starts before next was made while we were sending
                # (outbox full); it is sent whole, and the receiver records the rest.
                self._cache[max(entry.first, self.next)] = entry
        self.pump()

    def _fetch_failed(self, failure) -> None:
        self._fetching = False
        self._journal.limited_log.error(
            "Could not read the {name} to send it: {error}. Check the disk; closing the connection, "
            "which starts again from the last acknowledged entry.",
            key="journal read failures", name=self._journal.name, error=failure.getErrorMessage(),
        )  # fmt: skip
        self._end("the journal could not be read")

    def ack(self, seq: int) -> bool:
        """
        The receiver has durably stored everything up to C{seq}; C{False} for
        an ack of what was not sent yet (ignored: the caller says so).
        """
        if seq > self.next - 1:
            return False
        if seq > self.acked:
            self.acked = seq
            self._journal.acknowledge(seq)
            for key in [k for k in self._cache if k <= seq]:
                del self._cache[key]
            if self._on_ack is not None:
                self._on_ack(seq)
            self.pump()
        return True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.pump()

    def stop(self) -> None:
        """The connection is gone: send nothing more."""
        if self.stopped:
            return
        self.stopped = True
        self._journal.remove_listener(self._committed)
        self._journal.remove_fork_listener(self._forked)
        self._cache.clear()
        probes, self._probes = self._probes, {}
        for d in probes.values():
            d.errback(_SearchAborted("the connection is gone"))
