"""
C{serve}'s publishing side: the journal of every change of every input
(polled by the sampler, or reported by the GPIO driver), the subscribers
that stream it, and the C{status} of both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rpisensor.sensing.reader import InputReader
from rpisensor.stream.follower import ChangeFollower
from rpisensor.stream.identity import ClockState
from rpisensor.stream.journal import Journal, JournalError, missing_entries
from rpisensor.stream.measuring import MeasurementSampler
from rpisensor.stream.journal_service import JournalService
from rpisensor.stream.sampler import Sampler
from rpisensor.stream.state import InputState

#: Why the entries before the journal's first one are missing (C{status}).


class JournalOpenError(SystemExit, Exception):
    """
    The journal cannot be used when C{serve} starts. Its message is one line
    naming the file, the reason and what to do.

    Both kinds on purpose, as L{rpisensor.store.StoreOpenError}: raised from
    C{startService}, as an L{Exception} it reaches twistd's daemonizing parent
    through its status pipe; as a L{SystemExit} it ends a C{twistd -n} with
    just its message, no traceback.
    """


@dataclass(frozen=True)
class PublishSettings:
    """
    How C{serve} publishes changes; each has an option of the same name.

    @ivar device: this Pi's name in the stream (C{--device}).
    @ivar window: the most readings sent to a subscriber and not yet acknowledged.
    @ivar poll_interval: seconds between two reads of the inputs the sampler watches.
    @ivar max_subscribers: subscriptions at once (they count toward
        C{--max-connections} too): each may hold up to twice C{window} readings
        in memory while it catches up, and reads the journal's thread.
    @ivar max_lag: seconds a subscriber may leave what we send unread (its
        connection's buffer full) before it is dropped.
    """

    device: str
    window: int = 1000
    poll_interval: float = 0.1
    max_subscribers: int = 50
    max_lag: float = 30.0


class PublishingService(Service):
    """
    Opens the journal when the service starts (after twistd forked and
    dropped privileges), then records every change of every input in it:
    the sampler reads the inputs every C{poll_interval} through the read
    pool; inputs an L{InputState} follows are recorded from their reported
    changes instead, without reads. On stop: no more sampling, the reads in
    flight recorded, then the journal synced and closed.

    @ivar subscriptions: the connections streaming the journal now.
    @ivar on_sent: called with how many readings went to a subscriber, per
        batch (the web side's metrics set it), or C{None}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor,
        reader: InputReader,
        journal: JournalService,
        settings: PublishSettings,
        state: InputState | None = None,
        clock_state: ClockState | None = None,
    ) -> None:
        self._reactor = reactor
        self.reader = reader
        self.journal = journal
        self.settings = settings
        self.state = state
        self._clock_state = clock_state if clock_state is not None else ClockState()
        self.sampler: Sampler | None = None
        self.follower: ChangeFollower | None = None
        self.measuring: MeasurementSampler | None = None
        self.subscriptions: set = set()
        self.on_sent: Callable[[int], object] | None = None

    @property
    def device(self) -> str:
        return self.settings.device

    # -- life ----------------------------------------------------------------------

    def startService(self) -> None:
        """
        @raise JournalOpenError: the journal cannot be used; the message says
            which file and why, in one line.
        """
        super().startService()
        try:
            self.journal.startService()
        except JournalError as e:
            raise JournalOpenError(
                f"rpisensor: {e} (choose another file with --journal FILE, or keep it in memory "
                "with --journal none)"
            ) from None
        followed = self.state.tracked if self.state is not None else set()
        polled = [name for name in self.reader.inputs if name not in followed]
        if polled:
            self.sampler = Sampler(
                self.reader, self.journal, self._reactor, self.settings.poll_interval, True,
                self._clock_state, names=polled,
            )  # fmt: skip
            self.sampler.start()
            self._log.info(
                "Recording every change of {names} for subscribers: each input is read every "
                "{interval:g} s (--poll-interval).",
                names=", ".join(polled), interval=self.settings.poll_interval,
            )  # fmt: skip
        if followed:
            self.follower = ChangeFollower(self.state, self.journal, self._clock_state)
            self.follower.start()
        if self.reader.sensors:
            self.measuring = MeasurementSampler(self.reader, self.journal, self._reactor, self._clock_state)
            self.measuring.start()
            self._log.info(
                "Recording the measurements of {names} for subscribers, each at its interval= "
                "(or when it moved by more than its change=).",
                names=", ".join(self.reader.sensors),
            )

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.follower is not None:
            self.follower.stop()
        if self.measuring is not None:
            self.measuring.stop()
        # The samples in flight finish (each within the read timeout) and are recorded
        # before the journal's last commit.
        await self.reader.when_settled()
        await self.journal.stopService()

    # -- subscribers ------------------------------------------------------------------

    def has_room(self) -> bool:
        return len(self.subscriptions) < self.settings.max_subscribers

    def busy_reply(self) -> str:
        return (
            f"error: busy: {len(self.subscriptions)} subscribers already (--max-subscribers); "
            "use go or read NAME, or subscribe later"
        )

    # -- status -------------------------------------------------------------------------

    def status(self, peers: bool = True) -> Deferred[str]:
        """
        Fires with the C{status} reply: one line, the journal, its gaps and the subscribers
        (with C{peers}, each one's address).
        """
        return self.journal.gaps().addCallback(self._status_line, peers)

    def _status_line(self, gaps, peers: bool = True) -> str:
        journal = self.journal.journal
        missing = missing_entries(journal, gaps)
        subscriptions = sorted((s.status() for s in self.subscriptions), key=lambda s: s["peer"])
        if not peers:
            subscriptions = [{k: v for k, v in s.items() if k != "peer"} for s in subscriptions]
        body = {
            "device": self.device,
            "stream": journal.stream,
            "journal": None if journal.path is None else str(journal.path),
            "first": journal.first,
            "last": journal.last,
            "rows": journal.rows,
            "gaps": missing,
            "subscribers": len(subscriptions),
            "subscriptions": subscriptions,
        }
        return "status " + json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def open_publishing(
    reactor,
    reader: InputReader,
    path: Path | None,
    settings: PublishSettings,
    max_entries: int | None = None,
    max_bytes: int | None = None,
    sync: str = "batch",
    state: InputState | None = None,
) -> PublishingService:
    """The publishing side with its journal at C{path} (C{None}: in memory); nothing opens yet."""
    journal = Journal(path, max_entries=max_entries or 1_000_000, sync=sync)
    service = JournalService(reactor, journal, outbox=False, max_bytes=max_bytes)
    return PublishingService(reactor, reader, service, settings, state)
