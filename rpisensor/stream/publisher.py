"""
The publishing side of C{serve}'s stream: one subscriber's session. After
C{welcome} the subscriber says where to start: after a seq it already has
(a resume: the entries since, then live ones), or nowhere (a live view: the
latest reading of every input, marked C{snapshot}, then live ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.logger import Logger

from rpisensor.entries import Gap, Reading
from rpisensor.stream.outbox import JournalService
from rpisensor.stream.sender import TRIMMED, StreamSender
from rpisensor.wire import v2


class AheadOfStream(ValueError):
    """The subscriber asked for entries after the end of the stream."""


class Publication:
    """
    Sends C{journal}'s entries to one subscriber through C{send}.

    @param window: the most entries sent and not yet acknowledged.
    @param on_sent: called with how many readings went out, once per batch
        (the snapshot's, then the sender's: see L{StreamSender}).
    """

    _log = Logger()

    def __init__(
        self,
        journal: JournalService,
        send: Callable[[str], None],
        device: str,
        window: int = 1000,
        on_sent: Callable[[int], object] | None = None,
    ) -> None:
        self._journal = journal
        self._send = send
        self._on_sent = on_sent
        self.device = device
        self.window = window
        self.sender: StreamSender | None = None
        self._paused = False
        self._stopped = False

    def welcome(self, heartbeat: float | None = None) -> v2.Welcome:
        journal = self._journal.journal
        return v2.Welcome(
            device=self.device, stream=journal.stream, first=journal.first, last=journal.last,
            heartbeat=heartbeat,
        )  # fmt: skip

    def subscribe(self, after: int | None) -> None:
        """
        Start sending.

        @raise AheadOfStream: C{after} is beyond the stream's last entry.
        """
        journal = self._journal.journal
        if after is None:
            self._journal.snapshot().addCallback(self._snapshot)
            return
        if after > journal.last:
            raise AheadOfStream(
                f"nothing after {after} in stream {journal.stream}: it ends at {journal.last}"
            )
        if journal.first and after + 1 < journal.first:
            # Entries the subscriber has yet to get are no longer kept: a gap first.
            self._send(v2.encode(Gap(stream=journal.stream, first=after + 1, last=journal.first - 1, reason=TRIMMED)))
            after = journal.first - 1
        self._start(after)

    def _snapshot(self, snapshot) -> None:
        if self._stopped:
            return
        last, latest = snapshot
        for reading in sorted(latest.values(), key=lambda r: r.seq):
            self._send(v2.encode(_as_snapshot(reading)))
        if latest and self._on_sent is not None:
            self._on_sent(len(latest))
        self._start(last)

    def _start(self, after: int) -> None:
        if self._stopped:
            return
        self.sender = StreamSender(self._journal, self._send, after, self.window, on_sent=self._on_sent)
        if self._paused:
            self.sender.pause()

    def ack(self, seq: int) -> None:
        if self.sender is not None:
            self.sender.ack(seq)

    def pause(self) -> None:
        self._paused = True
        if self.sender is not None:
            self.sender.pause()

    def resume(self) -> None:
        self._paused = False
        if self.sender is not None:
            self.sender.resume()

    def stop(self) -> None:
        self._stopped = True
        if self.sender is not None:
            self.sender.stop()


def _as_snapshot(reading: Reading) -> Reading:
    return replace(reading, snapshot=True)
