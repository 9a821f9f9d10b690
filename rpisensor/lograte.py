"""
Log lines that a peer or a sensor can trigger, rate-limited so that a flood
of bad input or a failing sensor cannot fill an SD card.

Each kind of line (its format string, or a C{key} the caller names) may be
emitted C{burst} times per C{window} seconds; beyond that the lines are
counted, and one summary line says how many were left out once the window
ends and a line of that kind comes again, or when L{RateLimitedLog.flush}
is called.

The kinds are bounded too (C{max_kinds}): a key that holds something a peer
names (a device, a stream) could otherwise make a new kind, with a budget of
its own, per connection. A kind whose window has ended is forgotten (its
summary logged); while C{max_kinds} kinds are in their windows, a new kind's
lines share one more window, so no more than C{(max_kinds + 1) * burst}
lines are logged per window, however many keys come.

Twisted's logger has no rate limiting of its own, and a filtering observer
would have to be installed by whoever starts logging (twistd, or an embedding
program), so the limit sits in front of the L{Logger} instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

#: Lines of one kind logged one by one per window.
DEFAULT_BURST = 5
#: Seconds of one window.
DEFAULT_WINDOW = 60.0
#: Kinds with a window of their own at once.
DEFAULT_MAX_KINDS = 32
#: The kind of the lines of every kind beyond C{max_kinds}.
OTHER_KINDS = "lines of other kinds (too many kinds at once)"


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """
    A front for a L{Logger}: C{warn}, C{info} and C{error} as on the logger,
    at most C{burst} lines of one kind per C{window} seconds.

    @param clock: where the windows' time comes from (a L{Clock} in tests).
    @param logger: the logger the lines go to; its namespace names them.
    """

    def __init__(
        self,
        clock: IReactorTime,
        logger: Logger,
        burst: int = DEFAULT_BURST,
        window: float = DEFAULT_WINDOW,
        max_kinds: int = DEFAULT_MAX_KINDS,
    ) -> None:
        self._clock = clock
        self._logger = logger
        self.burst = burst
        self.window = window
        self.max_kinds = max_kinds
        self._windows: dict[str, _Window] = {}
        #: When the oldest window ends: no kind can be forgotten before then.
        self._sweep_at = 0.0
        #: Lines left out since this log was made, for tests and metrics.
        self.suppressed = 0

    def info(self, format: str, key: str | None = None, **fields) -> bool:
        return self.emit(LogLevel.info, format, key, **fields)

    def warn(self, format: str, key: str | None = None, **fields) -> bool:
        return self.emit(LogLevel.warn, format, key, **fields)

    def error(self, format: str, key: str | None = None, **fields) -> bool:
        return self.emit(LogLevel.error, format, key, **fields)

    def emit(self, level: LogLevel, format: str, key: str | None = None, **fields) -> bool:
        """
        Log the line unless its kind used up its window; return whether it
        was logged.

        @param key: what makes two lines the same kind; by default the format
            string, so C{"Bad message from {peer}"} is one kind for all peers.
        """
        now = self._clock.seconds()
        window = self._window(level, format if key is None else key, now)
        if window.logged < self.burst:
            window.logged += 1
            self._logger.emit(level, format, **fields)
            return True
        window.suppressed += 1
        self.suppressed += 1
        return False

    def left_out(self, key: str, count: int) -> None:
        """
        Count C{count} more lines of kind C{key} as left out, without making
        them: for a caller that was just told (by a C{False}) that the kind's
        window is used up, and has many more such lines at once.
        """
        window = self._windows.get(key)
        if window is None:
            window = self._windows.get(OTHER_KINDS)  # (that is where the line went)
        if window is not None and count > 0:
            window.suppressed += count
            self.suppressed += count

    def _window(self, level: LogLevel, kind: str, now: float) -> _Window:
        """The window the lines of C{kind} count in now: its own, or (beyond max_kinds) the other kinds'."""
        window = self._windows.get(kind)
        if window is None:
            if len(self._windows) >= self.max_kinds and now >= self._sweep_at:
                self._forget_ended(level, now)
            if len(self._windows) >= self.max_kinds:
                kind = OTHER_KINDS
                window = self._windows.get(kind)
        if window is not None and now - window.start >= self.window:
            self._summarise(level, kind, window, now)
            window = None
        if window is None:
            window = self._windows[kind] = _Window(now)
        return window

    def _forget_ended(self, level: LogLevel, now: float) -> None:
        """Forget the kinds whose window has ended, after logging what they left out."""
        for kind, window in list(self._windows.items()):
            if now - window.start >= self.window:
                self._summarise(level, kind, window, now)
                del self._windows[kind]
        starts = [window.start for window in self._windows.values()]
        self._sweep_at = min(starts) + self.window if starts else now

    def flush(self) -> None:
        """Log the summaries of every kind with lines left out (at shutdown)."""
        now = self._clock.seconds()
        for kind, window in list(self._windows.items()):
            self._summarise(LogLevel.warn, kind, window, now)
        self._windows.clear()

    def _summarise(self, level: LogLevel, kind: str, window: _Window, now: float) -> None:
        if window.suppressed:
            self._logger.emit(
                level,
                "{count} more lines like this were left out in the last {seconds:.0f} s: {kind}",
                count=window.suppressed,
                seconds=now - window.start,
                kind=kind,
            )
            window.suppressed = 0
