"""
rpisensor's gpiod backend on the real kernel GPIO stack (gpio-sim in User-Mode Linux): the
header chip found by its label, inputs with bias, edges delivered through the reactor,
kernel debounce, and an overflowed event buffer reported as lost events.

Changes are spaced so the kernel sees each one (gpio-sim delivers on the next 1 ms tick):
each waits for the previous change's event, or 6 ms.
"""

from __future__ import annotations

import time

import pytest
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


@pytest.fixture
def gpio():
    """A gpiod backend on the header chip (BCM numbering), released after the test."""
    backends = []

    def open_backend(numbering="bcm", **options):
        backends.append(KernelGPIO(numbering, **options))
        return backends[-1]

    yield open_backend
    for backend in backends:
        backend.cleanup()


def test_finds_the_header_chip_by_label(header, gpio):
    """The chip is found by its label, not by its number (chip 0 is another chip here)."""
    assert find_header_chip() == header.path != "/dev/gpiochip0"
    backend = gpio()
    verifyObject(IGPIOBackend, backend)
    verifyObject(IEdgeSource, backend)
    assert backend.chip == header.path


def test_bias_and_reads(header, gpio):
    """An input with a pull-up reads high; driven low from outside, it reads low."""
    backend = gpio()
    backend.setup_input(17, "up")
    assert backend.read(17) is True
    header.pull(17, False)
    assert backend.read(17) is False


def test_board_numbering(header, gpio):
    """BOARD pin 11 is line 17 (BCM 17)."""
    backend = gpio("board")
    backend.setup_input(11, "down")
    header.pull(17, True)
    assert backend.read(11) is True


@pytest_twisted.ensureDeferred
async def test_edges_through_the_reactor(header, gpio, reactor):
    """Each change arrives in the reactor as one LevelChange with the kernel's wall-clock time."""
    backend = gpio()
    changes = Changes(reactor)
    backend.setup_input(22, "down")
    backend.watch(reactor, changes)
    before = time.time()
    for count in range(1, 7):
        header.pull(22, count % 2 == 1)
        await changes.wait_count(count)
    assert [c.high for c in changes.seen] == [True, False] * 3
    assert [c.channel for c in changes.seen] == [22] * 6
    assert all(c.lost == 0 for c in changes.seen)
    assert before - 1 < changes.seen[0].when < time.time() + 1
    assert backend.level(22) is False


@pytest_twisted.ensureDeferred
async def test_debounce(header, gpio, reactor):
    """With debounce=0.1 s, a bouncing press is one change; a glitch shorter than 0.1 s is none."""
    backend = gpio()
    changes = Changes(reactor)
    backend.setup_input(23, "down", debounce=0.1)
    backend.watch(reactor, changes)
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


@pytest_twisted.ensureDeferred
async def test_overflow_is_reported_as_lost(header, gpio, reactor):
    """More changes than the kernel's buffer while nobody reads: the loss is counted, never silent."""
    backend = gpio(event_buffer=4)
    changes = Changes(reactor)
    backend.setup_input(5, "down")
    for count in range(12):  # the reactor is not reading while these come
        header.pull(5, count % 2 == 0)
        time.sleep(0.006)
    backend.watch(reactor, changes)
    seen = await changes.wait_for(lambda seen: any(c.lost for c in seen) and not seen[-1].high)
    assert sum(c.lost for c in seen) == backend.lost[5] > 0
    assert backend.level(5) is False  # the last change: pulled low
