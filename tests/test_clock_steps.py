"""
A step of the wall clock (NTP after fake-hwclock on a Pi without a real-time
clock) moves no timer: the reactor schedules on a monotonic clock
(L{rpisensor.app.clock}), and timestamps come from the wall clock alone.

Unit tests drive the two clocks apart (a L{Clock} schedules, a function tells
the wall time); the end-to-end test steps the wall clock of a real C{twistd
rpisensor serve} with libfaketime (Debian's C{faketime}, which C{.ci/run}
installs) and watches a deadman output go safe on time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rpisensor.app.clock import schedule_on_monotonic
from rpisensor.control.controller import OutputController
from rpisensor.control.outputs import OutputSpec
from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.testing import inline_runner
from tests.processes import Twistd, connect_tcp, request, wait_until
from tests.support import LOOPBACK

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class WallClock:
    """A wall clock a test steps: C{now()} is the scheduler's time plus an offset."""

    def __init__(self, scheduler: Clock, start: float = 1_764_600_000.0) -> None:
        self._scheduler = scheduler
        self.offset = start

    def __call__(self) -> float:
        return self._scheduler.seconds() + self.offset

    def step(self, seconds: float) -> None:
        self.offset += seconds


class ScheduleOnMonotonicTests(SynchronousTestCase):
    def test_the_reactor_schedules_on_the_monotonic_clock(self) -> None:
        reactor = SelectReactor()
        self.addCleanup(reactor.disconnectAll)
        schedule_on_monotonic(reactor)
        self.assertIs(reactor.seconds, time.monotonic)
        call = reactor.callLater(5, lambda: None)
        self.addCleanup(call.cancel)
        self.assertLess(abs(call.getTime() - time.monotonic() - 5), 1)

    def test_calls_already_scheduled_keep_their_delay(self) -> None:
        reactor = SelectReactor()
        self.addCleanup(reactor.disconnectAll)
        call = reactor.callLater(30, lambda: None)
        self.addCleanup(call.cancel)
        schedule_on_monotonic(reactor)
        schedule_on_monotonic(reactor)  # a second time changes nothing
        self.assertLess(abs(call.getTime() - time.monotonic() - 30), 1)
        call.reset(2)
        self.assertLess(abs(call.getTime() - time.monotonic() - 2), 1)


class DeadmanTests(SynchronousTestCase):
    """An output's deadman runs on the scheduler; the change is stamped with the wall time."""

    def test_a_step_back_neither_delays_the_deadman_nor_its_timestamp_source(self) -> None:
        clock = Clock()
        wall = WallClock(clock)
        gpio = SimulatedGPIO(clock=clock)
        motor = OutputSpec("motor", 16, ttl=0.5)
        controller = OutputController(gpio, [motor], inline_runner, clock, wall=wall)
        controller.setup()
        changes = []
        controller.add_listener(lambda spec, level, when: changes.append((level.value, when)))
        self.successResultOf(controller.set("test", "motor", True))
        wall.step(-60)  # NTP steps the wall clock back a minute
        clock.advance(0.5)
        self.assertEqual(controller.level("motor").value, 0.0, "the deadman went safe at its ttl")
        self.assertEqual([value for value, _ in changes], [1.0, 0.0])
        self.assertLess(abs(changes[-1][1] - wall()), 0.001)  # stamped with the (stepped) wall time


class ServeUnderAClockStepTests(SynchronousTestCase):
    """
    C{twistd rpisensor serve} with its wall clock stepped back a minute by
    libfaketime, the monotonic clock untouched (as NTP does it): a deadman
    output with C{ttl=0.5} still goes safe within seconds. Before the reactor
    scheduled on the monotonic clock it stayed on for the minute.
    """

    def test_deadman_goes_safe_after_the_wall_clock_steps_back(self) -> None:
        if not LIBFAKETIME.exists():
            if os.environ.get("RPISENSOR_FAKETIME_REQUIRED") == "1":
                self.fail(f"RPISENSOR_FAKETIME_REQUIRED=1, but {LIBFAKETIME} is missing")
            raise SkipTest(f"needs libfaketime ({LIBFAKETIME}; Debian's faketime package)")
        offset = Path(self.mktemp())
        offset.write_text("+0\n")
        twistd = Twistd(
            "rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, "--journal", "none",
            "--output", "motor=16,ttl=0.5",
            env={
                "LD_PRELOAD": str(LIBFAKETIME),
                "FAKETIME_TIMESTAMP_FILE": str(offset.resolve()),
                "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            },
        )  # fmt: skip
        self.addCleanup(twistd.close)
        port = twistd.wait_port()
        with connect_tcp(port) as driver, connect_tcp(port) as watcher:
            self.assertEqual(request(driver, b"set motor on"), b"motor on\0")
            offset.write_text("-60\n")  # the wall clock steps back a minute
            # The driver keeps its connection (a disconnect would make the motor safe at once).
            started = time.monotonic()
            wait_until(lambda: request(watcher, b"outputs") == b"motor=off\0", timeout=20,
                       describe=lambda: twistd.log)  # fmt: skip
            self.assertLess(time.monotonic() - started, 20)
