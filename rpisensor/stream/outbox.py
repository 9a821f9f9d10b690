"""
The journal as a Twisted service: appends from the reactor are committed in
the journal's own thread, one transaction per reactor turn, before anyone is
told about them; once a second the commits are synced; trimming and bounds
are applied as the journal's use says.

Two uses, one class:
  - C{report}'s outbox: entries are kept until the collector acknowledges
    them (L{JournalService.acknowledge}); beyond C{max_entries} the oldest
    unacknowledged ones become a gap entry ("outbox full").
  - C{serve}'s history: the newest C{max_entries} are kept for subscribers
    that resume; older ones are simply forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from rpisensor.lograte import RateLimitedLog
from rpisensor.stream.journal import Entry, Journal, NewReading
from rpisensor.wire.v2 import Gap

#: Seconds between syncs of the commits (batch mode) and between trims.
SYNC_INTERVAL = 1.0
TRIM_INTERVAL = 10.0
#: Seconds the final sync and close may take at shutdown before we stop waiting.
STOP_DEADLINE = 10.0


@dataclass(frozen=True)
class JournalStatus:
    """What C{status} reports about a journal."""

    stream: str
    first: int
    last: int
    rows: int
    acked: int
    gaps: tuple[Gap, ...]
    syncs: int


class JournalService(Service):
    """
    Owns a L{Journal} and the one thread that uses it.

    @param outbox: C{True} for C{report}'s outbox, C{False} for C{serve}'s history.
    @param runner: runs blocking calls, C{runner(f, *args) -> Deferred}; by
        default the service's own one-thread pool. Tests pass an inline runner.
    """

    _log = Logger()

    def __init__(
        self, reactor, journal: Journal, outbox: bool, runner=None, max_bytes: int | None = None
    ) -> None:
        self._reactor = reactor
        self.journal = journal
        self.outbox = outbox
        #: For lines a peer's pace can repeat (a full outbox, a subscriber far
        #: behind): shared by this journal's senders, so many cannot flood the log.
        self.limited_log = RateLimitedLog(reactor, self._log)
        #: A bound in bytes instead of entries: turned into entries from the
        #: file's measured bytes per entry, once there are enough to measure.
        self.max_bytes = max_bytes
        self._pool: ThreadPool | None = None
        if runner is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="rpisensor-journal")
            self._pool.threadFactory = _daemon_thread
            runner = partial(deferToThreadPool, reactor, self._pool)
        self._run = runner
        self._batch: list[tuple[NewReading, Deferred]] = []
        self._flush_call = None
        self._writing: Deferred | None = None
        self._listeners: list[Callable[[list[Entry]], object]] = []
        self._ticks: LoopingCall | None = None
        self._since_trim = 0.0
        self.acked = 0
        self.opened = None

    # -- life ----------------------------------------------------------------------

    def startService(self) -> None:
        """
        Open the journal now: after twistd forked and dropped privileges (so the
        file belongs to the service's user), and before anything is sampled or
        served. Opening is quick (it may recover from a power cut); a journal
        that cannot be used stops the start-up with L{JournalError}.
        """
        super().startService()
        self.opened = self.journal.open()
        if self.max_bytes is not None:
            self.journal.max_entries = max(2, self.max_bytes // 64)  # until measured
            self._bound_by_bytes()
        if self._pool is not None:
            self._pool.start()
        skipped = self.opened.skipped
        self._log.info(
            "Journal {path}: stream {stream}, entries {first} to {last}.",
            path=str(self.journal.path or "in memory"),
            stream=self.opened.stream,
            first=self.journal.first,
            last=self.journal.last,
        )
        if skipped is not None:
            self._log.warn(
                "The journal was not closed cleanly before the last reboot (a power cut?): the "
                "sequence skips {first} to {last}, so no number is used twice.",
                first=skipped.first, last=skipped.last,
            )  # fmt: skip
        self._ticks = LoopingCall(self._tick)
        self._ticks.clock = self._reactor
        self._ticks.start(SYNC_INTERVAL, now=False).addErrback(self._tick_failed)

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._ticks is not None and self._ticks.running:
            self._ticks.stop()
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()
        closed = True
        if self.opened is not None:
            closing = self._run(self._close_in_thread)
            closing.addTimeout(STOP_DEADLINE, self._reactor)
            try:
                await closing
            except Exception as e:
                closed = False
                self._log.error(
                    "Could not close the journal {path} cleanly ({error}); it recovers at the next "
                    "start without losing what was committed.",
                    path=str(self.journal.path), error=str(e) or type(e).__name__,
                )  # fmt: skip
        if self._pool is not None and closed:
            self._pool.stop()  # idle now: returns at once
        # (a journal thread stuck on a hung disk is a daemon thread: it ends with the process)

    def _close_in_thread(self) -> None:
        if self.outbox:
            self.journal.trim_through(self.acked)
        self.journal.close(clean=True)

    # -- appending -------------------------------------------------------------------

    def add_listener(self, listener: Callable[[list[Entry]], object]) -> None:
        """Call C{listener} with every batch of entries once they are committed."""
        self._listeners.append(listener)

    def remove_listener(self, listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def append(self, reading: NewReading) -> Deferred:
        """Fires with the stream entry once C{reading} is committed (and before it is sent)."""
        d: Deferred = Deferred()
        self._batch.append((reading, d))
        if self._flush_call is None and self._writing is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        self._writing = self._run(self._append_in_thread, [reading for reading, _ in batch])
        self._writing.addBoth(self._written, batch)

    def _append_in_thread(self, readings: list[NewReading]) -> tuple[list[Entry], Gap | None]:
        entries = self.journal.append(readings)
        if self.max_bytes is not None and entries and entries[-1].seq % 1000 < len(entries):
            self._bound_by_bytes()
        if self.outbox:
            gap = self.journal.drop_oldest_over(self.journal.max_entries, "outbox full")
        else:
            self.journal.trim_to(self.journal.max_entries)
            gap = None
        return entries, gap

    def _bound_by_bytes(self) -> None:
        journal = self.journal
        if journal.rows >= 100:
            per_entry = max(1.0, journal.size_bytes() / journal.rows)
            journal.max_entries = max(2, int(self.max_bytes / per_entry))

    def _written(self, result, batch) -> None:
        self._writing = None
        if isinstance(result, Failure):
            self._log.error(
                "Could not write {count} readings to the journal {path}: {error}. Check the disk.",
                count=len(batch), path=str(self.journal.path), error=result.getErrorMessage(),
            )  # fmt: skip
            for _, d in batch:
                d.errback(result)
        else:
            entries, gap = result
            if gap is not None:
                self.limited_log.warn(
                    "The outbox is full ({limit} entries): readings {first} to {last} were dropped, "
                    "oldest first. The collector will record the gap. Raise --outbox-max, or bring "
                    "the collector back.",
                    limit=self.journal.max_entries, first=gap.first, last=gap.last,
                )  # fmt: skip
            for (_, d), entry in zip(batch, entries):
                d.callback(entry)
            for listener in list(self._listeners):
                try:
                    listener(entries)
                except Exception:
                    self._log.failure("A journal listener failed")
        if self._batch and self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    # -- reading back ------------------------------------------------------------------

    def after(self, seq: int, limit: int) -> Deferred:
        """Fires with up to C{limit} entries after C{seq}, read in the journal's thread."""
        return self._run(self.journal.after, seq, limit)

    def latest_per_sensor(self, before: str | None = None) -> Deferred:
        return self._run(self.journal.latest_per_sensor, before)

    def readings_since(self, ts: str, limit: int) -> Deferred:
        """Fires with C{(the newest limit readings taken since ts, the last seq)}, read together."""
        return self._run(lambda: (self.journal.readings_since(ts, limit), self.journal.last))

    def snapshot(self) -> Deferred:
        """Fires with C{(last, latest reading of each sensor)}, taken together in the journal's thread."""
        return self._run(lambda: (self.journal.last, self.journal.latest_per_sensor()))

    def acknowledge(self, seq: int) -> None:
        """The collector has everything up to C{seq}: it may be trimmed (at the next trim)."""
        self.acked = max(self.acked, seq)

    def status(self) -> JournalStatus:
        journal = self.journal
        return JournalStatus(
            journal.stream, journal.first, journal.last, journal.rows, self.acked, (), journal.syncs
        )

    def gaps(self) -> Deferred:
        return self._run(self.journal.gaps)

    # -- the tick: sync once a second, trim every ten ------------------------------------

    def _tick(self) -> Deferred:
        self._since_trim += SYNC_INTERVAL
        trim = self.outbox and self._since_trim >= TRIM_INTERVAL
        if trim:
            self._since_trim = 0.0
        return self._run(self._tick_in_thread, trim, self.acked).addErrback(self._tick_failed_once)

    def _tick_in_thread(self, trim: bool, acked: int) -> None:
        if trim:
            self.journal.trim_through(acked)
        self.journal.sync()

    def _tick_failed_once(self, failure: Failure) -> None:
        self._log.error(
            "Syncing the journal {path} failed: {error}. Check the disk.",
            path=str(self.journal.path), error=failure.getErrorMessage(),
        )  # fmt: skip

    def _tick_failed(self, failure: Failure) -> None:
        self._log.failure("The journal's sync timer stopped", failure)


def _daemon_thread(*args, **kwargs):
    import threading

    return threading.Thread(*args, daemon=True, **kwargs)
