"""
rpisensor's gpiod backend on the real kernel GPIO stack (gpio-sim in User-Mode Linux): the
header chip found by its label, inputs with bias, edges delivered through the reactor,
kernel debounce, and an overflowed event buffer reported as lost events.

Changes are spaced so the kernel sees each one (gpio-sim delivers on the next 1 ms tick):
each waits for the previous change's event, or 6 ms.
"""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet.defer import Deferred

from rpisensor.hw.gpiod import KernelGPIO, find_header_chip
from rpisensor.hw.interfaces import IEdgeSource, IGPIOBackend
from zope.interface.verify import verifyObject

DEADLINE = 10.0


class Changes:
    """Every LevelChange the backend delivers, with Deferreds that wait for a count."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.seen = []
        self._waiting = []

    def __call__(self, change):
        self.seen.append(change)
        for condition, d in list(self._waiting):
            if condition(self.seen):
                self._waiting.remove((condition, d))
                d.callback(list(self.seen))

    def wait_for(self, condition):
        d = Deferred()
        if condition(self.seen):
            d.callback(list(self.seen))
            return d
        self._waiting.append((condition, d))
        return d.addTimeout(DEADLINE, self.reactor)

    def wait_count(self, count):
        return self.wait_for(lambda seen: len(seen) >= count)


def backend(numbering="bcm", **options):
    gpio = KernelGPIO(numbering, **options)
    return gpio


def test_finds_the_header_chip_by_label(header):
    """The chip is found by its label, not by its number (chip 0 is another chip here)."""
    assert find_header_chip() == header.path != "/dev/gpiochip0"
    gpio = backend()
    verifyObject(IGPIOBackend, gpio)
    verifyObject(IEdgeSource, gpio)
    assert gpio.chip == header.path


def test_bias_and_reads(header):
    """An input with a pull-up reads high; driven low from outside, it reads low."""
    gpio = backend()
    try:
        gpio.setup_input(17, "up")
        assert gpio.read(17) is True
        header.pull(17, False)
        assert gpio.read(17) is False
    finally:
        gpio.cleanup()


def test_board_numbering(header):
    """BOARD pin 11 is line 17 (BCM 17)."""
    gpio = backend("board")
    try:
        gpio.setup_input(11, "down")
        header.pull(17, True)
        assert gpio.read(11) is True
    finally:
        gpio.cleanup()


@pytest_twisted.ensureDeferred
async def test_edges_through_the_reactor(header, reactor):
    """Each change arrives in the reactor as one LevelChange with the kernel's wall-clock time."""
    gpio = backend()
    changes = Changes(reactor)
    try:
        gpio.setup_input(22, "down")
        gpio.watch(reactor, changes)
        before = time.time()
        for count in range(1, 7):
            header.pull(22, count % 2 == 1)
            await changes.wait_count(count)
        assert [c.high for c in changes.seen] == [True, False] * 3
        assert [c.channel for c in changes.seen] == [22] * 6
        assert all(c.lost == 0 for c in changes.seen)
        assert before - 1 < changes.seen[0].when < time.time() + 1
        assert gpio.level(22) is False
    finally:
        gpio.cleanup()


@pytest_twisted.ensureDeferred
async def test_debounce(header, reactor):
    """With debounce=0.1 s, a bouncing press is one change; a glitch shorter than 0.1 s is none."""
    gpio = backend()
    changes = Changes(reactor)
    try:
        gpio.setup_input(23, "down", debounce=0.1)
        gpio.watch(reactor, changes)
        for index in range(5):  # bounces 20 ms apart, settling high
            header.pull(23, index % 2 == 0)
            time.sleep(0.02)
        await changes.wait_count(1)
        start = time.monotonic()
        header.pull(23, False)
        time.sleep(0.04)  # shorter than the debounce: suppressed
        header.pull(23, True)
        held = time.monotonic() - start
        header.pull(23, False)  # then a real release, held
        await changes.wait_count(2)
        if held < 0.1:  # the glitch really was shorter than the period (a loaded host may stall us)
            assert [c.high for c in changes.seen] == [True, False]
    finally:
        gpio.cleanup()


@pytest_twisted.ensureDeferred
async def test_overflow_is_reported_as_lost(header, reactor):
    """More changes than the kernel's buffer while nobody reads: the loss is counted, never silent."""
    gpio = backend(event_buffer=4)
    changes = Changes(reactor)
    try:
        gpio.setup_input(5, "down")
        for count in range(12):  # the reactor is not reading while these come
            header.pull(5, count % 2 == 0)
            time.sleep(0.006)
        gpio.watch(reactor, changes)
        seen = await changes.wait_for(lambda seen: any(c.lost for c in seen) and not seen[-1].high)
        assert sum(c.lost for c in seen) == gpio.lost[5] > 0
        assert gpio.level(5) is False  # the last change: pulled low
    finally:
        gpio.cleanup()
