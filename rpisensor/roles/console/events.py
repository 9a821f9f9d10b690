"""
The console's second connection: a live view of the server's stream
(the follower L{rpisensor.remote.follow} that C{watch} uses too), so that
every change, an output's included, shows as it happens, whoever caused
it; after a dropped link it resumes where it was, missing nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from rpisensor.remote.follow import Audience
from rpisensor.wire import v2


def describe(frame: v2.Reading | v2.Gap) -> str:
    """A pushed entry as the console shows it: C{* led: on}, C{* cpu: 48.17 °C} (the text carries the unit)."""
    if isinstance(frame, v2.Gap):
        return f"* readings {frame.first} to {frame.last} are missing ({frame.reason})"
    note = " (state when subscribed)" if frame.snapshot else ""
    return f"* {frame.sensor}: {frame.text}{note}"


class ConsoleEvents(Audience):
    """
    Shows each entry the follower gets with C{show}; when the server cannot
    stream, says so once and calls C{give_up}.
    """

    def __init__(self, show: Callable[[str], None], give_up: Callable[[], object]) -> None:
        self._show = show
        self._give_up = give_up

    def reading(self, reading: v2.Reading, device: str) -> None:
        self._show(describe(reading))

    def gap(self, gap: v2.Gap, device: str) -> None:
        self._show(describe(gap))

    def unusable(self, why: str) -> None:
        self._show(f"console: no pushed events: {why.removeprefix('error:').strip()}")
        self._give_up()
