"""
When a reconnecting client tries again: promptly after losing a connection
that worked, then quickly (a Pi rebooted on a LAN is back within seconds),
then ever later while attempts fail, up to a cap (a server gone for hours on
the Internet is not hammered).

Twisted's C{ClientService} asks its retry policy for a delay with the count
of failed attempts since the last connection, so the first retry after a
good connection waits as long as after a first failure (2-3 s with
C{backoffPolicy}), and a server that accepts and closes at once resets the
count each time. L{RetrySchedule} is that policy, told by the connecting
endpoint what happened, so that it can tell the cases apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rpisensor.lograte import RateLimitedLog
from rpisensor.net.wording import NamedLogger

#: A connection that lived this many seconds counts as having worked.
HEALTHY_AFTER = 0.5
#: Seconds before each retry while attempts fail in a row, the first after losing a
#: connection that worked; then twice the last, up to the cap (--max-delay).
STEPS = (0.2, 0.5, 1.0, 2.0)
#: Each wait is made longer by up to this share of it, at random, so that many
#: clients that lost one server do not all come back at once.
JITTER = 0.25
#: The wait right after losing a connection that worked, without its jitter.
PROMPT_DELAY = STEPS[0]
#: Lines of one kind about reconnecting, per minute (a flapping link can cause many).
STORY_BURST = 10
#: Waits at least this long are always logged: there are few of them.
ALWAYS_TOLD = 5.0


def retry_delay(failures: int, max_delay: float = 60.0, jitter: Callable[[], float] = random.random) -> float:
    """
    Seconds to wait before the next attempt after C{failures} failed ones in a
    row (0: right after a connection that worked): 0.2, 0.5, 1, 2, 4, 8 ... up
    to C{max_delay}, each plus up to L{JITTER} of itself at random.
    """
    if failures < len(STEPS):
        delay = STEPS[failures]
    else:
        delay = STEPS[-1] * 2.0 ** (failures - len(STEPS) + 1)
    delay = min(delay, max_delay)
    return delay * (1.0 + JITTER * jitter())


class RetrySchedule:
    """
    The retry policy of one reconnecting client (call it with C{ClientService}'s
    attempt count; the count it keeps itself is used instead).

     - After a connection that lived at least L{HEALTHY_AFTER} seconds and
       was not refused: the next attempt comes after L{PROMPT_DELAY} seconds
       (plus jitter).
     - After each failed attempt, each connection closed sooner than that,
       and each refusal (the server said C{error: ...} and closed): the wait
       grows as L{retry_delay}'s, up to C{max_delay}.

    Each wait is logged as C{Reconnecting to WHERE in 2.1 s (attempt 3)},
    where the attempt counts the tries since the last connection that worked.
    """

    _log = NamedLogger("rpisensor.client")

    def __init__(
        self,
        clock,
        where: str,
        max_delay: float = 60.0,
        jitter: Callable[[], float] = random.random,
        healthy_after: float = HEALTHY_AFTER,
    ) -> None:
        self._clock = clock
        self.where = where
        self.max_delay = max_delay
        self._jitter = jitter
        self.healthy_after = healthy_after
        #: Attempts that failed since the last connection that worked.
        self.failures = 0
        #: Tries since the last connection that worked.
        self.attempt = 0
        self._connected_at: float | None = None
        self._story = RateLimitedLog(clock, self._log, burst=STORY_BURST)

    def connected(self) -> None:
        """A connection is usable (after its handshake, for TLS)."""
        self._connected_at = self._clock.seconds()

    def attempt_failed(self) -> None:
        """An attempt failed before the connection was usable."""
        self.failures += 1

    def lost(self, refused: bool = False) -> None:
        """
        The connection ended; C{refused}: the server said why it would not
        serve us (a refusal counts as a failed attempt).
        """
        lived = self._clock.seconds() - self._connected_at if self._connected_at is not None else 0.0
        self._connected_at = None
        if refused or lived < self.healthy_after:
            self.failures += 1
        else:
            self.failures = 0
            self.attempt = 0

    def delay(self) -> float:
        """Seconds to wait before the next attempt."""
        return retry_delay(self.failures, self.max_delay, self._jitter)

    def __call__(self, _attempt: int) -> float:
        self.attempt += 1
        delay = self.delay()
        story = self._log if delay >= ALWAYS_TOLD else self._story
        story.info(
            "Reconnecting to {where} in {delay:.1f} s (attempt {attempt})",
            where=self.where,
            delay=delay,
            attempt=self.attempt,
        )
        return delay
