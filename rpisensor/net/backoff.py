"""
When a reconnecting client tries again: promptly after losing a connection
that worked, exponentially later while attempts fail.

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

from twisted.application.internet import backoffPolicy
from rpisensor.net.wording import NamedLogger

from rpisensor.lograte import RateLimitedLog

#: A connection that lived this many seconds counts as having worked.
HEALTHY_AFTER = 0.5
#: Seconds before the first retry after losing a connection that worked,
#: plus up to PROMPT_JITTER more, so that many clients do not all come back at once.
PROMPT_DELAY = 0.1
PROMPT_JITTER = 0.3
#: Lines of one kind about reconnecting, per minute (a flapping link can cause many).
STORY_BURST = 10


def retry_policy(
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    factor: float = 2.0,
    jitter: Callable[[], float] = random.random,
) -> Callable[[int], float]:
    """
    Twisted's exponential backoff: C{initial_delay * factor ** attempt} seconds,
    at most C{max_delay}, plus up to one second of C{jitter} so that many
    clients do not all come back at once.
    """
    return backoffPolicy(initial_delay, max_delay, factor, jitter)


class RetrySchedule:
    """
    The retry policy of one reconnecting client (call it with C{ClientService}'s
    attempt count; the count it keeps itself is used instead).

     - After a connection that lived at least L{HEALTHY_AFTER} seconds and
       was not refused: the next attempt comes after L{PROMPT_DELAY} plus up
       to L{PROMPT_JITTER} seconds.
     - After each failed attempt, each connection closed sooner than that,
       and each refusal (the server said C{error: ...} and closed): the wait
       grows as L{retry_policy}'s, up to C{max_delay}.

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
        self._backoff = retry_policy(max_delay=max_delay, jitter=jitter)
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
        if self.failures == 0:
            return PROMPT_DELAY + PROMPT_JITTER * self._jitter()
        return self._backoff(self.failures)

    def __call__(self, _attempt: int) -> float:
        self.attempt += 1
        delay = self.delay()
        self._story.info(
            "Reconnecting to {where} in {delay:.1f} s (attempt {attempt})",
            where=self.where,
            delay=delay,
            attempt=self.attempt,
        )
        return delay
