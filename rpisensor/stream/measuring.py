"""
Turning measurements into stream entries: each measurement sensor is read
every C{interval=} seconds (its own), and a value is published (recorded in
the journal, given to C{on_publish}) when it moved by more than C{change=}
since the last one published, or at every interval when C{change=} is 0.

A sensor that fails (a CRC error, a missing device, a read past its timeout)
publishes nothing: a stream's value is always a number. The reader logs the
failure, rate-limited, and C{read NAME} answers C{error: ...}; the other
sensors and the inputs are read on as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.sensing.reader import InputReader
from rpisensor.sensing.sample import Measurement
from rpisensor.stream.identity import ClockState
from rpisensor.stream.journal_service import JournalService
from rpisensor.stream.sampler import record, to_entry


class MeasurementSampler:
    """
    Reads every measurement sensor of C{reader} on its own interval into C{journal}.

    @param journal: where published values go; C{None}: only C{on_publish}.
    @param on_publish: also called with each published L{Measurement} (the
        v1 reporter sends its text).
    """

    _log = Logger()

    def __init__(
        self,
        reader: InputReader,
        journal: JournalService | None,
        clock,
        clock_state: ClockState | None = None,
        on_publish: Callable[[Measurement], object] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.reader = reader
        self.names = list(reader.sensors if names is None else names)
        self.journal = journal
        self._clock = clock
        self._clock_state = clock_state if clock_state is not None else ClockState()
        self._on_publish = on_publish
        #: Sensor name -> the last value published (the journal's, across restarts).
        self.published: dict[str, float] = {}
        self._loops: dict[str, LoopingCall] = {}

    def start(self) -> Deferred | None:
        """Start every sensor's loop, first learning what the journal last holds of each."""
        if not self.names:
            return None
        if self.journal is not None:
            d = self.journal.latest_per_sensor()
            d.addCallback(self._learn)
            d.addBoth(lambda _: self._start_loops())
            return d
        self._start_loops()
        return None

    def _learn(self, latest) -> None:
        self.published = {name: entry.value for name, entry in latest.items() if name in self.names}

    def _start_loops(self) -> None:
        for name in self.names:
            loop = self._loops[name] = LoopingCall(self.sample, name)
            loop.clock = self._clock
            loop.start(self.reader.sensors[name].interval, now=True).addErrback(self._loop_failed, name)

    def _loop_failed(self, failure: Failure, name: str) -> None:
        self._log.failure("Measuring {name} stopped", failure, name=name)

    def stop(self) -> None:
        for loop in self._loops.values():
            if loop.running:
                loop.stop()
        self._loops.clear()

    def sample(self, name: str) -> Deferred:
        """
        Read sensor C{name} once and publish the value if it is due; fires
        when that is done, never with an error (the reader logs those). A
        read still in progress is shared, so a slow sensor is never read
        twice at once.
        """
        synced = self._clock_state.synced()
        return self.reader.read(name).addCallbacks(self._measured, _ignore, (synced,))

    def _measured(self, measurement: Measurement, synced: bool) -> None:
        name = measurement.name
        last = self.published.get(name)
        change = measurement.sensor.change
        if change and last is not None and abs(measurement.value - last) <= change:
            return
        if self._on_publish is not None:
            self._on_publish(measurement)
        if self.journal is None:
            self.published[name] = measurement.value
        else:
            record(self.journal, self.published, to_entry(measurement, synced))


def _ignore(failure: Failure) -> None:
    pass  # the reader logs a failing sensor (rate-limited) and answers read NAME with the error
