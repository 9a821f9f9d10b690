"""
Tests for L{rpisensor.sensing.polling.PolledEdges}: inputs of a backend without edge
events read in one pass per interval by a thread of their own, the reactor told
only of changes. The thread runs for real; the tests run its passes in step
with themselves (an injected wait), so nothing depends on timing.
(The same with the real RPi.GPIO on the emulated Pi: tests/test_gpio_rpi.py.)
"""

from __future__ import annotations

import queue
import threading

from twisted.internet import reactor as real_reactor
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rpisensor.hw.interfaces import IEdgeSource, LevelChange, SensorReadError
from rpisensor.sensing.polling import PolledEdges, polls_cheaply
from rpisensor.hw.rpi import RPiGPIO
from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.sensing.inputs import InputSpec

#: How long a test waits for the polling thread: generous, and only ever waited out on a failure.
PATIENCE = 30.0


class Pins:
    """A backend's inputs, read from any thread; a read of a channel in C{failing} raises."""

    def __init__(self, levels: dict[int, bool]) -> None:
        self.levels = dict(levels)
        self.failing: dict[int, str] = {}
        self.reads = 0

    def read(self, channel: int) -> bool:
        self.reads += 1
        if channel in self.failing:
            raise SensorReadError(self.failing[channel])
        return self.levels[channel]


class Reactor:
    """
    What the polling thread uses of a reactor: calls from the thread are queued for the test.
    Its C{seconds} (the scheduling clock) is not the wall clock; C{wall} is.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()
        self.now = 1000.0

    def seconds(self) -> float:
        return 5.0  # monotonic: never a timestamp

    def wall(self) -> float:
        return self.now

    def callFromThread(self, f, *args) -> None:
        self.calls.put((f, args))

    def run_calls(self) -> int:
        """Run every call the thread has queued, in the test's thread; how many."""
        count = 0
        while not self.calls.empty():
            f, args = self.calls.get()
            f(*args)
            count += 1
        return count


class InStep:
    """A wait that lets the polling thread make one pass each time the test says so."""

    def __init__(self) -> None:
        self.waiting = threading.Semaphore(0)
        self.orders: queue.Queue = queue.Queue()
        self.delays: list[float] = []

    def __call__(self, delay: float) -> bool:
        self.delays.append(delay)
        self.waiting.release()
        return self.orders.get(timeout=PATIENCE) == "stop"

    def until_waiting(self, case: SynchronousTestCase) -> None:
        case.assertTrue(self.waiting.acquire(timeout=PATIENCE), "the polling thread did not finish its pass")

    def next_pass(self, case: SynchronousTestCase) -> None:
        self.orders.put("next")
        self.until_waiting(case)


BUTTON = InputSpec("button", 24)
DOOR = InputSpec("door", 26, debounce=0.03)


class PolledEdgesTests(SynchronousTestCase):
    def start(self, levels: dict[int, bool], inputs=(BUTTON,), interval: float = 0.01):
        self.pins = Pins(levels)
        self.reactor = Reactor()
        self.step = InStep()
        self.edges = PolledEdges(self.pins, inputs, interval, wait=self.step, wall=self.reactor.wall)
        self.changes: list[LevelChange] = []
        self.edges.watch(self.reactor, self.changes.append)
        self.addCleanup(self.stop)
        self.step.until_waiting(self)  # the thread's first pass

    def stop(self) -> None:
        self.step.orders.put("stop")
        self.edges.unwatch()

    def test_an_edge_source(self) -> None:
        """It is an edge source whose levels are not exact (go still reads the pin)."""
        edges = PolledEdges(Pins({24: True}), [BUTTON], 0.01)
        verifyObject(IEdgeSource, edges)
        self.assertFalse(edges.tracks_levels)

    def test_first_pass_before_watching(self) -> None:
        """The levels are read once when it is made, before any thread runs: level() needs no read."""
        pins = Pins({24: False, 26: True})
        edges = PolledEdges(pins, [BUTTON, DOOR], 0.01)
        self.assertEqual((edges.level(24), edges.level(26), pins.reads), (False, True, 2))

    def test_no_change_no_wake_up(self) -> None:
        """Passes that find every level as before read each input and never call into the reactor."""
        self.start({24: True, 26: True}, inputs=(BUTTON, InputSpec("b2", 26)))
        reads = self.pins.reads
        for _ in range(5):
            self.step.next_pass(self)
        self.assertEqual(self.pins.reads - reads, 10)
        self.assertEqual(self.reactor.run_calls(), 0)
        self.assertEqual(self.changes, [])

    def test_changes_in_one_wake_up(self) -> None:
        """Two inputs that changed by the same pass reach the reactor in one call, stamped with the wall clock."""
        self.start({24: True, 26: True}, inputs=(BUTTON, InputSpec("b2", 26)))
        self.pins.levels.update({24: False, 26: False})
        self.reactor.now = 1234.5
        self.step.next_pass(self)
        self.assertEqual(self.reactor.run_calls(), 1)
        self.assertEqual(self.changes, [LevelChange(1234.5, 24, False), LevelChange(1234.5, 26, False)])
        self.assertEqual((self.edges.level(24), self.edges.level(26)), (False, False))

    def test_pulse_of_one_pass(self) -> None:
        """A pulse that lasts from one pass to the next is seen: a press, then a release, in order."""
        self.start({24: True})
        self.pins.levels[24] = False
        self.step.next_pass(self)
        self.pins.levels[24] = True
        self.step.next_pass(self)
        self.reactor.run_calls()
        self.assertEqual([c.high for c in self.changes], [False, True])

    def test_debounce_in_whole_passes(self) -> None:
        """
        A 30 ms debounce at 10 ms passes: a new level counts once four passes in a row read it
        (the first and the three after); a bounce back before that is never reported.
        """
        self.start({26: True}, inputs=(DOOR,))
        self.pins.levels[26] = False
        for _ in range(3):  # read low three times, then high again: a bounce
            self.step.next_pass(self)
        self.pins.levels[26] = True
        self.step.next_pass(self)
        self.pins.levels[26] = False
        for _ in range(3):
            self.step.next_pass(self)
        self.reactor.run_calls()
        self.assertEqual(self.changes, [])
        self.step.next_pass(self)
        self.reactor.run_calls()
        self.assertEqual([c.high for c in self.changes], [False])

    def test_passes_keep_their_schedule(self) -> None:
        """Each wait is for what is left of the interval: never more than it, never negative."""
        self.start({24: True}, interval=0.05)
        for _ in range(3):
            self.step.next_pass(self)
        self.assertTrue(all(0 <= d <= 0.05 + 1e-9 for d in self.step.delays), self.step.delays)

    def test_read_failures_logged_once_and_level_kept(self) -> None:
        """
        A failing input keeps its last level and is logged once per kind of failure, not per pass,
        and once more when it reads again; the other inputs are polled all along.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start({24: True, 26: True}, inputs=(BUTTON, InputSpec("b2", 26)))
        self.pins.failing[24] = "the register cannot be read"
        for _ in range(3):
            self.step.next_pass(self)
        self.pins.levels[26] = False
        self.step.next_pass(self)
        del self.pins.failing[24]
        self.step.next_pass(self)
        self.reactor.run_calls()
        texts = [e["log_format"] for e in logged]
        self.assertEqual(len([t for t in texts if t.startswith("Polling input")]), 1)
        self.assertEqual(len([t for t in texts if t.startswith("Input {name} reads again")]), 1)
        self.assertEqual(self.changes, [LevelChange(self.reactor.now, 26, False)])
        self.assertTrue(self.edges.level(24))

    def test_unwatch_stops_the_thread(self) -> None:
        """With its own wait, unwatch ends the wait at once and the thread is gone when it returns."""
        edges = PolledEdges(Pins({24: True}), [BUTTON], 3600.0)
        edges.watch(Reactor(), lambda change: None)
        thread = edges._thread
        edges.unwatch()
        self.assertFalse(thread.is_alive())
        edges.unwatch()  # twice: nothing

    def test_changes_after_unwatch_are_dropped(self) -> None:
        """A change found by the last pass but delivered after unwatch reaches no one."""
        self.start({24: True})
        self.pins.levels[24] = False
        self.step.next_pass(self)
        self.stop()
        self.reactor.run_calls()
        self.assertEqual(self.changes, [])


class WhichBackendsTests(SynchronousTestCase):
    def test_rpi_polls_cheaply(self) -> None:
        """RPi.GPIO's reads are register reads: polled in a thread; simulated pins are not."""
        self.assertTrue(polls_cheaply(RPiGPIO.__new__(RPiGPIO)))
        self.assertFalse(polls_cheaply(SimulatedGPIO(clock=real_reactor)))
