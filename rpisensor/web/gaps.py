"""
The gaps the page's health shows: for each stream, how many ranges of
entries will never arrive, and the latest few of them (C{from}, C{to},
C{reason}), from history at start and as they happen.

  - L{ReceivedGaps} on C{collect} and C{poll --subscribe}: the gaps the
    store holds (read once, in a thread, when the page starts), then each
    gap as it is stored.
  - L{JournalGaps} on C{serve}: what C{status} reports, the journal's gap
    entries and the entries it no longer holds. Its gap entries are made
    only when it opens (after a power cut), so they are read once; what it
    trims shows in its bounds at each of the page's health checks.

A new gap is told to C{on_change} at once (the page's health event), not at
the next periodic check.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from rpisensor.entries import Gap
from rpisensor.stream.journal import missing_entries

#: The latest gaps of each stream the page shows (the count covers them all).
LATEST = 5

#: What a stream's history of gaps is read as: C{(count, latest gaps oldest first)}.
History = dict[tuple[str, str], tuple[int, list[dict]]]

_log = Logger(namespace="rpisensor.web.gaps")


def no_gaps() -> dict:
    return {"count": 0, "latest": []}


def gap_of(first: int, last: int, reason: str, received: str | None = None) -> dict:
    """One gap as the page and the JSON API show it."""
    gap = {"from": first, "to": last, "reason": reason}
    if received is not None:
        gap["received"] = received
    return gap


class StreamGaps:
    """One stream's gaps: how many, and the latest L{LATEST}."""

    def __init__(self, count: int = 0, latest: list[dict] = ()) -> None:
        self.count = count
        self.latest: deque[dict] = deque(latest, maxlen=LATEST)

    @property
    def reached(self) -> int:
        """The last entry a gap known here covers (a stream's gaps come in order and never overlap)."""
        return self.latest[-1]["to"] if self.latest else 0

    def add(self, gap: dict) -> bool:
        """Count C{gap}, unless one known covers its start already (told twice); whether it was new."""
        if gap["from"] <= self.reached:
            return False
        self.count += 1
        self.latest.append(gap)
        return True

    def describe(self) -> dict:
        return {"count": self.count, "latest": list(self.latest)}


class ReceivedGaps:
    """
    The gaps of every stream a receiving role stores.

    @param history: C{history() -> Deferred[History]}, the store's gaps
        (L{rpisensor.web.history.store_gaps}), or C{None} (no store).
    @ivar on_change: called with no arguments when a new gap is known.
    """

    def __init__(self, history: Callable[[], Deferred[History]] | None = None) -> None:
        self._history = history
        self._streams: dict[tuple[str, str], StreamGaps] = {}
        self.on_change: Callable[[], object] | None = None

    def start(self) -> Deferred:
        if self._history is None:
            return succeed(None)
        return self._history().addCallbacks(self._loaded, self._not_loaded)

    def stop(self) -> None:
        """Nothing to let go of: the history is read once."""

    def of(self, device: str, stream: str) -> dict:
        gaps = self._streams.get((device, stream))
        return gaps.describe() if gaps is not None else no_gaps()

    def on_gap(self, gap: Gap) -> None:
        """A gap was stored (the roles' C{on_gap})."""
        gaps = self._streams.setdefault((gap.device, gap.stream), StreamGaps())
        if gaps.add(gap_of(gap.first, gap.last, gap.reason, gap.received)):
            self._changed()

    def _loaded(self, history: History) -> None:
        for key, (count, latest) in history.items():
            stored = StreamGaps(count, latest)
            live = self._streams.get(key)
            if live is not None:
                # Gaps stored while the history was read: those it does not have count on top.
                seen = sum(g["from"] <= stored.reached for g in live.latest)
                new = [g for g in live.latest if g["from"] > stored.reached]
                stored.count += len(new) if seen else live.count
                stored.latest.extend(new)
            self._streams[key] = stored
        if history:
            self._changed()

    def _not_loaded(self, failure) -> None:
        _log.warn(
            "Could not read the store's gaps for the web page: {error}. The page shows only the gaps "
            "that arrive from now on.",
            error=failure.getErrorMessage(),
        )  # fmt: skip

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


class JournalGaps:
    """
    C{serve}'s gaps: as C{status} tells them (the entries before the
    journal's first, then its gap entries), the latest L{LATEST} shown.

    @param journal: the L{rpisensor.stream.journal_service.JournalService}.
    """

    def __init__(self, journal) -> None:
        self.journal = journal
        self._gaps: list[Gap] = []
        self.on_change: Callable[[], object] | None = None

    def start(self) -> Deferred:
        return self.journal.gaps().addCallback(self._loaded)

    def stop(self) -> None:
        """Nothing to let go of: the gaps are read once."""

    def describe(self) -> dict:
        journal = self.journal.journal
        # Those trimmed away are now part of what the journal no longer holds.
        self._gaps = [gap for gap in self._gaps if gap.last >= journal.first]
        missing = missing_entries(journal, self._gaps)
        return {"count": len(missing), "latest": missing[-LATEST:]}

    def _loaded(self, gaps: list[Gap]) -> None:
        self._gaps = gaps
        if gaps and self.on_change is not None:
            self.on_change()
