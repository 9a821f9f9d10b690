"""
The reporter's outbox: the journal holding every reading until the
collector has it, opened when the service starts and held by one reporter
at a time.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable

from rpisensor.store.opening import open_error
from rpisensor.stream.journal import Journal, JournalError
from rpisensor.stream.journal_service import JournalService


class OutboxOpenError(SystemExit, Exception):
    """
    The outbox cannot be used when the reporter starts; the message is one
    line naming the file and the reason.

    Both kinds on purpose, as L{rpisensor.store.StoreOpenError}: raised from
    C{startService}, as an L{Exception} it reaches twistd's daemonizing parent
    (which prints it), as a L{SystemExit} it ends a C{twistd -n} with just
    its message, no traceback.
    """

    __module__ = "rpisensor"


class OutboxService(JournalService):
    """
    A L{JournalService} used as C{report}'s outbox, which also takes the
    lock of its file: two reporters on one outbox would number their
    readings over each other. The lock is C{flock(2)} on C{FILE.lock}: the
    kernel drops it when the process ends, however it ends (SIGKILL, a
    power cut), so a stale one can never keep a reporter from starting.
    """

    def __init__(
        self, reactor, journal: Journal, runner=None, max_bytes: int | None = None, keep: float = 0.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(reactor, journal, outbox=True, runner=runner, max_bytes=max_bytes, keep=keep, wall=wall)
        self._lock_fd: int | None = None

    def startService(self) -> None:
        """
        Take the lock, open the outbox.

        @raise OutboxOpenError: it cannot be used; the message says why.
        """
        path = self.journal.path
        if path is not None:
            self._lock(f"{path}.lock")
        try:
            super().startService()
        except (JournalError, sqlite3.Error, OSError) as e:
            self._unlock()
            self.running = False
            reason = str(e).removeprefix(f"cannot use the journal {path}: ")
            raise OutboxOpenError(f"rpisensor: cannot use the outbox {path}: {reason}") from None

    def _lock(self, lock_path: str) -> None:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise OutboxOpenError(
                f"rpisensor: cannot use the outbox {self.journal.path}: {open_error(lock_path, e)}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutboxOpenError(
                f"rpisensor: cannot use the outbox {self.journal.path}: another reporter is using it; "
                "give each reporter its own --outbox (or state directory)"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor releases the flock
            self._lock_fd = None

    def stopService(self):
        d = super().stopService()
        return d.addBoth(self._unlocked)

    def _unlocked(self, result):
        self._unlock()
        return result
