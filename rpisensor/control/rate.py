"""
How fast one connection may send control commands: a token bucket on the
injected clock (no timer: the tokens are counted when a command comes).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class CommandRate:
    """
    At most C{rate} commands a second on average, and bursts of up to
    C{rate} (at least one) at once: a console repeating a command every
    0.1 s stays far below the default, a flood does not.
    """

    def __init__(self, clock: IReactorTime, rate: float) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = self.burst
        self._when = clock.seconds()

    def allow(self) -> bool:
        """Take one command's token; C{False} when there is none left now."""
        now = self._clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._when) * self.rate)
        self._when = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
