"""
The journal as a Twisted service: appends from the reactor are committed in
the journal's own thread, one transaction per reactor turn, before anyone is
told about them; once a second the commits are synced (with the receiver's
last ack); trimming and bounds are applied as the journal's use says.

Two uses, one class:
  - C{report}'s outbox: entries are kept until the collector acknowledges
    them (L{JournalService.acknowledge}), and, with C{keep}, that long after;
    beyond C{max_entries} the oldest unacknowledged ones become a gap entry
    ("outbox full").
  - C{serve}'s history: the newest C{max_entries} are kept for subscribers
    that resume; older ones are simply forgotten.

When the disk refuses a write (full, or failing), the readings wait in
memory, in order, and are written when it takes them again (tried once a
second); past C{max_unwritten} the oldest waiting ones are dropped and a gap
entry takes their place, naming the full disk, so the stream says what it
lost instead of skipping it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from rpisensor.entries import Entry, Gap, Reading
from rpisensor.lograte import RateLimitedLog
from rpisensor.stream.journal import Forked, Journal
from rpisensor.wire.v2 import format_timestamp

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


class ReadingLost(Exception):
    """A reading waited in memory for a disk that refused it, and was dropped (see L{JournalService})."""


class ForkRefused(RuntimeError):
    """The journal will not go on as a new stream again (see L{JournalService.forks_left})."""


class JournalClosed(RuntimeError):
    """A reading came after the journal was closed (the program is stopping)."""


#: Readings held in memory while the disk refuses writes, at most (--max-unwritten is not an
#: option: a minute of a busy Pi's readings, a few megabytes).
MAX_UNWRITTEN = 10_000


class JournalService(Service):
    """
    Owns a L{Journal} and the one thread that uses it.

    @param outbox: C{True} for C{report}'s outbox, C{False} for C{serve}'s history.
    @param runner: runs blocking calls, C{runner(f, *args) -> Deferred}; by
        default the service's own one-thread pool. Tests pass an inline runner.
    @param keep: an outbox's acknowledged entries stay this many seconds (by
        their timestamps) before they are trimmed, so a receiver restored from
        a backup can be refilled (C{--outbox-keep}); 0: trimmed once acknowledged.
    @param wall: the wall clock (epoch seconds) that C{keep} is measured on.
    @param max_unwritten: readings held in memory while the disk refuses them.
    """

    _log = Logger()

    def __init__(
        self,
        reactor,
        journal: Journal,
        outbox: bool,
        runner=None,
        max_bytes: int | None = None,
        *,
        keep: float = 0.0,
        wall: Callable[[], float] = time.time,
        max_unwritten: int = MAX_UNWRITTEN,
    ) -> None:
        self._reactor = reactor
        self.journal = journal
        self.outbox = outbox
        #: What the log calls it: C{report}'s outbox, C{serve}'s journal.
        self.name = "outbox" if outbox else "journal"
        #: For lines a peer's pace can repeat (a full outbox, a subscriber far
        #: behind): shared by this journal's senders, so many cannot flood the log.
        self.limited_log = RateLimitedLog(reactor, self._log)
        #: A bound in bytes instead of entries: turned into entries from the
        #: file's measured bytes per entry, once there are enough to measure.
        self.max_bytes = max_bytes
        self.keep = keep
        self._wall = wall
        self.max_unwritten = max_unwritten
        self._pool: ThreadPool | None = None
        if runner is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="rpisensor-journal")
            self._pool.threadFactory = _daemon_thread
            runner = partial(deferToThreadPool, reactor, self._pool)
        self._run = runner
        #: Readings not yet committed, oldest first: waiting for the next write,
        #: or for a disk that refused them.
        self._queue: deque[tuple[Reading, Deferred]] = deque()
        self._flush_call = None
        self._writing: Deferred | None = None
        #: Readings dropped from the queue since the last write that worked: how many, first and last ts.
        self._lost: tuple[int, str, str] | None = None
        self.failing = False
        self._listeners: list[Callable[[list[Entry]], object]] = []
        self._fork_listeners: list[Callable[[Forked], object]] = []
        #: How many more times the journal may go on as a new stream: an outbox
        #: (one receiver, which proves the copy) always; serve's journal once per
        #: start (a subscriber's say-so, trusted once).
        self.forks_left: int | None = None if outbox else 1
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
        self.acked = self.journal.acked
        if self.max_bytes is not None:
            self.journal.max_entries = max(2, self.max_bytes // 64)  # until measured
            self._bound_by_bytes()
        if self._pool is not None:
            self._pool.start()
        skipped = self.opened.skipped
        self._log.info(
            "{Name} {path}: stream {stream}, entries {first} to {last}.",
            Name=self.name.capitalize(),
            path=str(self.journal.path or "in memory"),
            stream=self.opened.stream,
            first=self.journal.first,
            last=self.journal.last,
        )
        if skipped is not None:
            self._log.warn(
                "The {name} was not closed cleanly before the last reboot (a power cut?): the "
                "sequence skips {first} to {last}, so no number is used twice.",
                name=self.name, first=skipped.first, last=skipped.last,
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
        # Everything appended before the stop is committed first: the write in
        # flight, then what waits behind it (one more try, for a refusing disk).
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        self.failing = False
        if self._writing is None:
            self._flush()
        while self._writing is not None:
            await _settled(self._writing)
            if self.failing:
                break
        if self._queue:
            self._log.error(
                "Stopping with {count} readings the disk would not take: they are lost. Free some "
                "space on the disk of {path}.",
                count=len(self._queue), path=str(self.journal.path),
            )  # fmt: skip
            self._drop(len(self._queue), JournalClosed("the program stopped while the disk refused the reading"))
        closed = True
        if self.opened is not None:
            closing = self._run(self._close_in_thread, self.acked)
            closing.addTimeout(STOP_DEADLINE, self._reactor)
            try:
                await closing
            except Exception as e:
                closed = False
                self._log.error(
                    "Could not close the {name} {path} cleanly ({error}); it recovers at the next "
                    "start without losing what was committed.",
                    name=self.name, path=str(self.journal.path), error=str(e) or type(e).__name__,
                )  # fmt: skip
        if self._pool is not None and closed:
            self._pool.stop()  # idle now: returns at once
        # (a journal thread stuck on a hung disk is a daemon thread: it ends with the process)

    def _close_in_thread(self, acked: int) -> None:
        self.journal.acknowledged(acked)
        if self.outbox:
            self.journal.trim_through(self.journal.acked, self._kept_since())
        self.journal.close(clean=True)

    # -- appending -------------------------------------------------------------------

    def add_listener(self, listener: Callable[[list[Entry]], object]) -> None:
        """Call C{listener} with every batch of entries once they are committed."""
        self._listeners.append(listener)

    def remove_listener(self, listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_fork_listener(self, listener: Callable[[Forked], object]) -> None:
        """Call C{listener} with the L{Forked} when the journal goes on as a new stream."""
        self._fork_listeners.append(listener)

    def remove_fork_listener(self, listener) -> None:
        if listener in self._fork_listeners:
            self._fork_listeners.remove(listener)

    def append(self, reading: Reading) -> Deferred:
        """
        Fires with the stream entry once C{reading} is committed (and before it
        is sent); fails with L{ReadingLost} if the disk refused it for so long
        that it was dropped, with L{JournalClosed} once the journal is closed.
        """
        if not self.running:
            return fail(JournalClosed(f"the {self.name} is closed (the program is stopping)"))
        d: Deferred = Deferred()
        self._queue.append((reading, d))
        if len(self._queue) > self.max_unwritten:
            self._drop(len(self._queue) - self.max_unwritten, None)
        if self._flush_call is None and self._writing is None and not self.failing:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _drop(self, count: int, error: Exception | None) -> None:
        """The oldest C{count} waiting readings go; a gap entry will say so."""
        gone = [self._queue.popleft() for _ in range(count)]
        lost, first_ts, last_ts = self._lost or (0, gone[0][0].ts, "")
        self._lost = (lost + count, first_ts, gone[-1][0].ts)
        failure = Failure(error or ReadingLost(f"the disk of the {self.name} refused it for too long"))
        for _, d in gone:
            d.errback(failure)
        if error is None:
            self.limited_log.error(
                "The disk of the {name} {path} still refuses writes: {count} readings held in memory, "
                "the oldest dropped. A gap entry will say so once it takes writes again.",
                key="journal readings dropped", name=self.name, path=str(self.journal.path),
                count=self.max_unwritten,
            )  # fmt: skip

    def _flush(self) -> None:
        self._flush_call = None
        if not self._queue:
            return
        batch = list(self._queue)
        self._queue.clear()
        lost, self._lost = self._lost, None
        self._writing = self._run(self._append_in_thread, [reading for reading, _ in batch], lost)
        self._writing.addBoth(self._written, batch, lost)

    def _append_in_thread(
        self, readings: list[Reading], lost: tuple[int, str, str] | None
    ) -> tuple[list[Entry], Gap | None]:
        journal = self.journal
        entries: list[Entry] = []
        if lost is not None:
            count, first_ts, last_ts = lost
            entries.append(journal.append_gap(count, f"the Pi's disk was full: {count} readings taken from "
                                                     f"{first_ts} to {last_ts} could not be saved"))  # fmt: skip
        entries += journal.append(readings)
        if self.max_bytes is not None and entries and entries[-1].last % 1000 < len(entries):
            self._bound_by_bytes()
        if self.outbox:
            gap = journal.drop_oldest_over(journal.max_entries, "outbox full")
        else:
            journal.trim_to(journal.max_entries)
            gap = None
        return entries, gap

    def _bound_by_bytes(self) -> None:
        journal = self.journal
        if journal.rows >= 100:
            per_entry = max(1.0, journal.size_bytes() / journal.rows)
            journal.max_entries = max(2, int(self.max_bytes / per_entry))

    def _written(self, result, batch, lost) -> None:
        self._writing = None
        if isinstance(result, Failure):
            # Nothing of the batch was committed (one transaction): it waits, first in line.
            self.failing = True
            self._queue.extendleft(reversed(batch))
            if lost is not None:
                count, first_ts, last_ts = lost
                if self._lost is not None:
                    count, last_ts = count + self._lost[0], self._lost[2]
                self._lost = (count, first_ts, last_ts)
            self.limited_log.error(
                "Could not write {count} readings to the {name} {path}: {error}. They wait in memory "
                "(up to {limit}) and are written once the disk takes them; free some space on it.",
                key="journal write failures", count=len(self._queue), name=self.name,
                path=str(self.journal.path), error=result.getErrorMessage(), limit=self.max_unwritten,
            )  # fmt: skip
            return
        if self.failing:
            self.failing = False
            self._log.info("The {name} {path} takes writes again.", name=self.name, path=str(self.journal.path))
        entries, gap = result
        if gap is not None:
            self.limited_log.warn(
                "The outbox is full ({limit} entries): readings {first} to {last} were dropped, "
                "oldest first. The collector will record the gap. Raise --outbox-max, or bring "
                "the collector back.",
                key="outbox full", limit=self.journal.max_entries, first=gap.first, last=gap.last,
            )  # fmt: skip
        readings = entries[len(entries) - len(batch):]
        for (_, d), entry in zip(batch, readings):
            d.callback(entry)
        for listener in list(self._listeners):
            try:
                listener(entries)
            except Exception:
                self._log.failure("A journal listener failed")
        if self._queue and self._flush_call is None:
            self._flush()  # what came while this was written: at once, as one batch (a stop waits for it)

    # -- reading back ------------------------------------------------------------------

    def after(self, seq: int, limit: int, then: Callable[[list[Entry]], object] | None = None) -> Deferred:
        """
        Fires with up to C{limit} entries after C{seq}, read in the journal's
        thread; with C{then}, with what C{then(entries)} returns, called in
        that thread too (work a reader does on them off the reactor).
        """
        if then is None:
            return self._run(self.journal.after, seq, limit)
        return self._run(lambda: then(self.journal.after(seq, limit)))

    def digest_at(self, seq: int) -> Deferred:
        """Fires with the chain's digest through the entry ending at C{seq}, or C{None} (see L{Journal.digest_at})."""
        return self._run(self.journal.digest_at, seq)

    def covering(self, seq: int) -> Deferred:
        """Fires with the entry covering C{seq}, C{(first, last, digest)}, or C{None} (see L{Journal.covering})."""
        return self._run(self.journal.covering, seq)

    def fork(self, after: int) -> Deferred:
        """
        Fires with the L{Forked} once the journal went on as a new stream (see
        L{Journal.fork}); every fork listener (each connection's sender) is told first.
        """
        refusal = self.fork_refused()
        if refusal is not None:
            return fail(ForkRefused(refusal))
        if self.forks_left is not None:
            self.forks_left -= 1
        self.acked = 0  # (from now on: a tick queued behind the fork must not ack the new stream)
        return self._run(self.journal.fork, after).addCallback(self._forked)

    def fork_refused(self) -> str | None:
        """Why the journal will not go on as a new stream now, or C{None} when it may."""
        if self.forks_left is not None and self.forks_left <= 0:
            return (
                f"this {self.name} already went on as a new stream once since it started; it does not "
                "again on a receiver's say-so (restart it if its journal really was restored again)"
            )
        return None

    def _forked(self, forked: Forked) -> Forked:
        for listener in list(self._fork_listeners):
            try:
                listener(forked)
            except Exception:
                self._log.failure("A fork listener failed")
        return forked

    def latest_per_sensor(self, before: str | None = None) -> Deferred:
        return self._run(self.journal.latest_per_sensor, before)

    def readings_since(self, ts: str, limit: int) -> Deferred:
        """Fires with C{(the newest limit readings taken since ts, the last seq)}, read together."""
        return self._run(lambda: (self.journal.readings_since(ts, limit), self.journal.last))

    def snapshot(self) -> Deferred:
        """Fires with C{(last, latest reading of each sensor)}, taken together in the journal's thread."""
        return self._run(lambda: (self.journal.last, self.journal.latest_per_sensor()))

    def acknowledge(self, seq: int) -> None:
        """The receiver has everything up to C{seq}: kept at the next sync, trimmed at the next trim."""
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
        if self.failing and self._writing is None and self._queue:
            self._flush()  # try the refusing disk again
        self._since_trim += SYNC_INTERVAL
        trim = self.outbox and self._since_trim >= TRIM_INTERVAL
        if trim:
            self._since_trim = 0.0
        kept_since = self._kept_since()
        return self._run(self._tick_in_thread, trim, self.acked, kept_since).addErrback(self._tick_failed_once)

    def _kept_since(self) -> str | None:
        return format_timestamp(self._wall() - self.keep) if self.keep > 0 else None

    def _tick_in_thread(self, trim: bool, acked: int, kept_since: str | None) -> None:
        self.journal.acknowledged(acked)
        if trim:
            self.journal.trim_through(self.journal.acked, kept_since)
        self.journal.sync()

    def _tick_failed_once(self, failure: Failure) -> None:
        self.limited_log.error(
            "Syncing the {name} {path} failed: {error}. Check the disk.",
            key="journal sync failures", name=self.name, path=str(self.journal.path),
            error=failure.getErrorMessage(),
        )  # fmt: skip

    def _tick_failed(self, failure: Failure) -> None:
        self._log.failure("The journal's sync timer stopped", failure)


def _settled(d: Deferred) -> Deferred:
    """A Deferred that fires (with None) once C{d} and the callbacks it has now have run."""
    done: Deferred = Deferred()

    def fire(result):
        done.callback(None)
        return result

    d.addBoth(fire)
    return done


def _daemon_thread(*args, **kwargs):
    import threading

    return threading.Thread(*args, daemon=True, **kwargs)
