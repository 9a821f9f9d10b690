"""
The sending side of a v2 stream over one connection: it replays what the
receiver does not have yet, keeps at most C{window} entries unacknowledged,
sends new entries as soon as they are committed, and stops while the
transport is paused. Entries always come from the journal, so nothing is
sent that a crash could take back.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from rpisensor.entries import Entry, Gap, Reading
from rpisensor.stream.outbox import JournalService
from rpisensor.wire import v2


#: Why entries a subscriber asked for are missing: serve's journal is bounded.
TRIMMED = "the Pi's journal no longer holds these (it keeps the newest --journal-max entries)"


class ReceiverAhead(Exception):
    """The receiver has more of this stream than the journal: it was restored from an old copy."""


class StreamSender:
    """
    Sends the entries of C{journal} after C{acked}, in order, through C{send}
    (the text of one v2 frame).

    @param window: the most entries sent and not yet acknowledged.
    @param paused: start paused (the transport is full already): nothing is
        sent before L{resume}.
    @param on_sent: called with how many readings went out, once per batch
        sent (the metrics' C{rpisensor_readings_out_total}); gaps are not counted.
    """

    _log = Logger()

    def __init__(
        self,
        journal: JournalService,
        send: Callable[[str], None],
        acked: int,
        window: int = 1000,
        paused: bool = False,
        on_sent: Callable[[int], object] | None = None,
    ) -> None:
        last = journal.journal.last
        if acked > last:
            raise ReceiverAhead(
                f"the receiver has entries up to {acked} of stream {journal.journal.stream}, but this "
                f"journal ends at {last}: was the journal file restored from an old copy? Delete it to "
                "start a new stream."
            )
        self._journal = journal
        self._send = send
        self._on_sent = on_sent
        self.window = window
        self.acked = acked
        #: The next seq to send.
        self.next = acked + 1
        #: How many entries were sent on this connection, replayed ones included.
        self.sent = 0
        self.replayed_until = last
        self._cache: dict[int, Entry] = {}
        self._fetching = False
        self.paused = paused
        self.stopped = False
        journal.add_listener(self._committed)
        journal.acknowledge(acked)
        self.pump()

    @property
    def in_flight(self) -> int:
        return self.next - 1 - self.acked

    def _committed(self, entries: list[Entry]) -> None:
        for entry in entries:
            first = entry.first
            if first >= self.next and len(self._cache) < 2 * self.window:
                self._cache[first] = entry
        self.pump()

    def pump(self) -> None:
        """
        Send what the window, the transport and the journal allow; with the
        window full, read the next entries from the journal meanwhile, so
        that the next ack finds them at hand (a replay then never waits for
        the journal between acks).
        """
        last = self._journal.journal.last
        readings = 0
        while not (self.paused or self.stopped) and self.in_flight < self.window and self.next <= last:
            entry = self._cache.pop(self.next, None)
            if entry is None:
                break
            self._send(v2.encode(entry))
            self.sent += 1
            if entry.__class__ is Reading:
                readings += 1
            self.next = entry.last + 1
        if readings and self._on_sent is not None:
            self._on_sent(readings)
        if not (self.paused or self.stopped) and self.next <= last and self.next not in self._cache:
            self._fetch()

    def _fetch(self) -> None:
        if self._fetching:
            return
        self._fetching = True
        wanted = self.next - 1
        d = self._journal.after(wanted, self.window)
        d.addCallbacks(self._fetched, self._fetch_failed)

    def _fetched(self, entries: list[Entry]) -> None:
        self._fetching = False
        if entries and entries[0].first > self.next:
            # serve's journal forgot the entries this subscriber has yet to get
            # (it keeps only the newest ones): say so, then go on after them.
            first = entries[0].first
            lost = Gap(stream=self._journal.journal.stream, first=self.next, last=first - 1, reason=TRIMMED)
            self._journal.limited_log.warn(
                "A subscriber fell behind: entries {first} to {last} are no longer in the journal.",
                first=lost.first, last=lost.last,
            )  # fmt: skip
            self._cache[self.next] = lost
        for entry in entries:
            first, last = entry.first, entry.last
            if last >= self.next:
                # A gap that starts before next was made while we were sending
                # (outbox full); it is sent whole, and the receiver records the rest.
                self._cache[max(first, self.next)] = entry
        self.pump()

    def _fetch_failed(self, failure) -> None:
        self._fetching = False
        self._log.error(
            "Could not read the journal to send it: {error}. Check the disk.",
            error=failure.getErrorMessage(),
        )

    def ack(self, seq: int) -> None:
        """The receiver has durably stored everything up to C{seq}."""
        if seq > self.next - 1:
            self._journal.limited_log.warn(
                "The receiver acknowledged {seq}, which was not sent yet (sent up to {sent}); ignored.",
                seq=seq, sent=self.next - 1,
            )  # fmt: skip
            return
        if seq > self.acked:
            self.acked = seq
            self._journal.acknowledge(seq)
            for key in [k for k in self._cache if k <= seq]:
                del self._cache[key]
            self.pump()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.pump()

    def stop(self) -> None:
        """The connection is gone: send nothing more."""
        self.stopped = True
        self._journal.remove_listener(self._committed)
        self._cache.clear()
