"""
Recording the changes an L{InputState} reports (kernel edge events) in a
journal: C{serve}'s history for subscribers and C{report}'s outbox alike,
each change once, timed by when the driver saw it, with no read and no
thread hop.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from rpisensor.sensing.sample import InputLevel
from rpisensor.stream.identity import ClockState
from rpisensor.stream.journal_service import JournalService
from rpisensor.stream.sampler import record, to_entry
from rpisensor.stream.state import InputState


class ChangeFollower:
    """
    Appends each change of C{state}'s inputs to C{journal}.

    On L{start} it first learns the journal's last value of each input, so a
    restart records only what changed meanwhile, never a repeat.

    @param on_reading: also called with each L{InputLevel} recorded (C{report}'s
        plain-text sending).
    """

    _log = Logger()

    def __init__(
        self,
        state: InputState,
        journal: JournalService,
        clock_state: ClockState,
        on_reading: Callable[[InputLevel], object] | None = None,
    ) -> None:
        self.state = state
        self.journal = journal
        self._clock_state = clock_state
        self._on_reading = on_reading
        self._recorded: dict[str, int] | None = None
        self._running = False

    def start(self) -> None:
        self._running = True
        self.journal.latest_per_sensor().addCallbacks(self._follow, self._unknown)

    def _unknown(self, failure) -> None:
        self._log.error(
            "Could not read what the journal last recorded of each input ({error}); recording every "
            "input's current level to be sure.",
            error=failure.getErrorMessage(),
        )
        self._follow({})

    def stop(self) -> None:
        self._running = False
        self.state.remove_listener(self._record)

    def _follow(self, latest) -> None:
        if not self._running:
            return
        self._recorded = {name: entry.value for name, entry in latest.items()}
        for name in sorted(self.state.tracked):
            known = self.state.known(name)
            if known is not None:
                self._record(known)
        self.state.add_listener(self._record)

    def _record(self, reading: InputLevel) -> None:
        if self._on_reading is not None:
            self._on_reading(reading)
        entry = to_entry(reading, self._clock_state.synced())
        if self._recorded.get(entry.sensor) == entry.value:
            return
        record(self.journal, self._recorded, entry)
