"""
Turning reads into stream entries: every input is read each interval, and
each sample (or, in change mode, each change) becomes a reading in the
journal, timed by the Pi's clock when the pin was read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.sensing.reader import InputReader
from rpisensor.sensing.sample import Sample, InputLevel
from rpisensor.stream.identity import ClockState
from rpisensor.entries import Reading
from rpisensor.stream.journal_service import JournalService
from rpisensor.wire.v2 import format_timestamp


def record(journal: JournalService, recorded: dict[str, float | int], entry: Reading) -> None:
    """
    Append C{entry} and note its value in C{recorded} (what a change is
    measured against); if the journal loses it (a disk that refused it for
    too long), forget the value again, so the next sample records the level
    anew instead of taking it as unchanged. The journal logs its own failures.
    """
    recorded[entry.sensor] = entry.value

    def lost(_) -> None:
        if recorded.get(entry.sensor) == entry.value:
            del recorded[entry.sensor]

    journal.append(entry).addErrback(lost)


def to_entry(reading: Sample, synced: bool) -> Reading:
    """
    A reading as a stream entry: a digital input's value is 1 when active (as
    its text says), else 0, without a unit; a measurement's is its number, with its unit.
    """
    return Reading(
        ts=format_timestamp(reading.time), synced=synced, sensor=reading.name, value=reading.value, text=reading.text,
        unit=reading.unit,
    )


class Sampler:
    """
    Reads every input of C{reader} each C{interval} seconds into C{journal}.

    @param changes_only: record a reading only when an input's value differs
        from the last one recorded (the journal's, across restarts); else
        every sample.
    @param on_sample: also called with each L{InputLevel} (recorded or not), for
        the v1 senders that push plain text.
    @param names: the inputs to read, by default all of C{reader}'s; C{serve}
        leaves out those whose level a backend reports by itself (edge events,
        see L{rpisensor.stream.state}).
    """

    _log = Logger()

    def __init__(
        self,
        reader: InputReader,
        journal: JournalService | None,
        clock,
        interval: float,
        changes_only: bool,
        clock_state: ClockState | None = None,
        on_sample: Callable[[InputLevel], object] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.reader = reader
        self.names = list(reader.inputs if names is None else names)
        self.journal = journal
        self.interval = interval
        self.changes_only = changes_only
        self._clock = clock
        self._clock_state = clock_state if clock_state is not None else ClockState()
        self._on_sample = on_sample
        self._recorded: dict[str, int] = {}
        #: Input name -> (a new value, when first seen): waiting for its debounce.
        self._settling: dict[str, tuple[int, float]] = {}
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock
        self._sampling: Deferred | None = None

    def start(self) -> Deferred | None:
        """Start sampling, first learning what the journal last recorded of each input."""
        if self.journal is not None and self.changes_only:
            d = self.journal.latest_per_sensor()
            d.addCallback(self._learn)
            d.addBoth(lambda _: self._start_loop())
            return d
        self._start_loop()
        return None

    def _learn(self, latest) -> None:
        self._recorded = {name: entry.value for name, entry in latest.items()}

    def _start_loop(self) -> None:
        self._loop.start(self.interval, now=True).addErrback(self._loop_failed)

    def _loop_failed(self, failure: Failure) -> None:
        self._log.failure("Sampling stopped", failure)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> Deferred:
        """Read every input once; a sample still in progress (a slow sensor) is shared, not doubled."""
        if self._sampling is not None:
            return self._sampling
        synced = self._clock_state.synced()
        reads = [
            self.reader.read(name).addCallbacks(self._read, self._read_failed, (synced,), None, (name,))
            for name in self.names
        ]
        self._sampling = DeferredList(reads)
        self._sampling.addBoth(self._done)
        return self._sampling

    def _done(self, result):
        self._sampling = None
        return result

    def _read(self, reading: InputLevel, synced: bool) -> None:
        if self._on_sample is not None:
            self._on_sample(reading)
        if self.journal is None:
            return
        entry = to_entry(reading, synced)
        if self.changes_only:
            recorded = self._recorded.get(entry.sensor)
            if recorded == entry.value:
                self._settling.pop(entry.sensor, None)  # a bounce that came back
                return
            if recorded is not None and not self._settled(reading, entry.value):
                return
        record(self.journal, self._recorded, entry)

    def _settled(self, reading: InputLevel, value) -> bool:
        """
        Whether a new level has held for the input's debounce, across samples:
        the kernel's "stable for the period" rule, for inputs that are polled.
        """
        debounce = getattr(reading.input, "debounce", 0.0)
        if not debounce:
            return True
        name = reading.input.name
        since = self._settling.get(name)
        if since is None or since[0] != value:
            self._settling[name] = (value, reading.time)
            return False
        if reading.time - since[1] < debounce:
            return False
        del self._settling[name]
        return True

    def _read_failed(self, failure: Failure, name: str) -> None:
        pass  # the reader logs a failing input once per kind of failure; sampling goes on
