"""
The threads of the gpiozero pin factory's link (why it has them: see
L{rpisensor.gpiozero.link}): a reactor of its own in a thread, with calls
from the program's threads that wait for its answer; one dispatcher thread
that hands what the Pi pushes to the program's callbacks, in order; and
rpisensor's log lines handed to Python's C{logging}.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable

from twisted.internet.defer import TimeoutError, maybeDeferred
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from rpisensor.app.clock import schedule_on_monotonic


class CallTimeout(Exception):
    """A call into the reactor's thread got no answer in time."""


def new_reactor():
    """A reactor instance of its own, never installed as the global one, scheduling on the monotonic clock."""
    try:
        from twisted.internet.epollreactor import EPollReactor as Reactor
    except ImportError:
        try:
            from twisted.internet.pollreactor import PollReactor as Reactor
        except ImportError:
            from twisted.internet.selectreactor import SelectReactor as Reactor
    reactor = Reactor()
    # Twisted's flag, set before run(): the thread a program's own reactor runs in
    # stays the process's I/O thread.
    reactor._registerAsIOThread = False
    schedule_on_monotonic(reactor)  # renewals and heartbeats: a step of the wall clock moves none
    return reactor


class ReactorThread:
    """L{new_reactor}'s reactor, run in a daemon thread (it must not keep a program alive)."""

    def __init__(self, name: str) -> None:
        self.reactor = new_reactor()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        self.reactor.run(installSignalHandlers=False)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, f, *args, timeout: float):
        """
        Run C{f(*args)} in the reactor's thread and return its result (a
        Deferred's, if it returns one), or raise what it raised.

        @raise CallTimeout: no answer within C{timeout} seconds.
        @raise RuntimeError: called from the reactor's own thread, which would wait on itself.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("a call into the reactor's thread cannot be made from that thread")
        results: queue.Queue = queue.Queue(1)

        def run() -> None:
            d = maybeDeferred(f, *args)
            d.addTimeout(timeout, self.reactor)
            d.addBoth(results.put)

        self.reactor.callFromThread(run)
        try:
            outcome = results.get(timeout=timeout + 5)  # (the reactor's own timeout answers first)
        except queue.Empty:
            raise CallTimeout() from None
        if isinstance(outcome, Failure):
            if outcome.check(TimeoutError):
                raise CallTimeout()
            outcome.raiseException()
        return outcome

    def stop(self, timeout: float) -> None:
        """Stop the reactor and wait for its thread, at most C{timeout} seconds."""
        self.reactor.callFromThread(self.reactor.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class Dispatcher:
    """
    Calls each listener with each item L{put}, in order, in a daemon thread
    of its own; a listener that raises is reported as a thread of the
    program's would be, and the next item still comes.
    """

    def __init__(self, name: str) -> None:
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._listeners: list[Callable] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add_listener(self, listener: Callable) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def put(self, *item) -> None:
        self._items.put(item)

    def _run(self) -> None:
        while True:
            item = self._items.get()
            if item is None:
                return
            for listener in list(self._listeners):
                try:
                    listener(*item)
                except Exception:
                    traceback.print_exc()

    def stop(self, timeout: float) -> None:
        self._items.put(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)


_forwarding = False

_LEVELS = {LogLevel.debug: logging.DEBUG, LogLevel.info: logging.INFO, LogLevel.warn: logging.WARNING,
           LogLevel.error: logging.ERROR, LogLevel.critical: logging.CRITICAL}  # fmt: skip


def forward_log_to_stdlib() -> None:
    """
    Hand rpisensor's log lines to Python's C{logging} (once per process), so
    that a gpiozero program sees the link's warnings on stderr, as any
    library's, without setting up Twisted's logging.
    """
    global _forwarding
    if _forwarding:
        return
    _forwarding = True

    def forward(event: dict) -> None:
        namespace = event.get("log_namespace", "")
        if not namespace.startswith("rpisensor"):
            return
        level = _LEVELS.get(event.get("log_level"), logging.INFO)
        logger = logging.getLogger(namespace)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", formatEvent(event))

    globalLogPublisher.addObserver(forward)
