"""
Doubles for tests of reads in a real thread pool, without real time: a
L{Clock} that also takes calls from worker threads (run when the test pumps
them, in the test's thread, as the reactor would run them in its own), and
simulated pins whose reads of one channel hang until the test releases them.

Time moves only when the test advances the clock, so a timeout fires exactly
when the test says; the only waiting is for a thread to reach a condition,
with a generous deadline that is never a measured duration.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from zope.interface import implementer

from rpisensor.hw.simulated import SimulatedGPIO

#: Seconds to wait for a worker thread to get somewhere; generous, never asserted.
PATIENCE = 30.0
#: Seconds between two checks of a condition while no call comes.
RECHECK = 0.01


@implementer(IReactorFromThreads)
class ThreadedClock(Clock):
    """A L{Clock} whose C{callFromThread} queues the call for L{pump_until}."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()

    def callFromThread(self, f: Callable, *args, **kwargs) -> None:
        self._calls.put((f, args, kwargs))

    def pump_until(self, predicate: Callable[[], object], patience: float = PATIENCE) -> None:
        """
        Run the calls worker threads handed over, in order, in this thread,
        until C{predicate()} is true. It is asked again at least every
        L{RECHECK} s, so it may also wait for what a thread does without a call.

        @raise AssertionError: no call that made it true came within C{patience} s.
        """
        deadline = time.monotonic() + patience
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"still waiting after {patience} s: {predicate}")
            try:
                f, args, kwargs = self._calls.get(timeout=min(remaining, RECHECK))
            except queue.Empty:
                continue
            f(*args, **kwargs)


class HangingPin(SimulatedGPIO):
    """
    Simulated pins where every read of C{channel} hangs, once begun, until
    L{release} is called: a sensor stuck in its driver.
    """

    def __init__(self, channel: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hang_channel = channel
        #: Set once a read of the channel has begun and hangs.
        self.hung = threading.Event()
        self._release = threading.Event()
        #: The threads C{cleanup} ran in.
        self.cleanup_threads: list[threading.Thread] = []

    def read(self, channel: int) -> bool:
        if channel == self.hang_channel and not self._release.is_set():
            self.hung.set()
            self._release.wait()
        return super().read(channel)

    def release(self) -> None:
        """Let the hung read, and every later one, return."""
        self._release.set()

    @property
    def released(self) -> bool:
        return self._release.is_set()

    def cleanup(self) -> None:
        self.cleanup_threads.append(threading.current_thread())
        super().cleanup()
