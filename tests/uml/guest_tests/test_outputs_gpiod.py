"""
rpisensor's gpiod backend driving outputs on the real kernel GPIO stack (gpio-sim in
User-Mode Linux): a line requested as an output already drives its initial (safe) value,
writes reach the line, and a release writes the safe level, then leaves the line an input,
free for others.
"""

from __future__ import annotations

import gpiod
import pytest

from rpisensor.hw.gpiod import KernelGPIO
from rpisensor.hw.interfaces import IOutputBackend, PinModeError
from zope.interface.verify import verifyObject


@pytest.fixture
def gpio():
    backends = []

    def open_backend(numbering="bcm"):
        backends.append(KernelGPIO(numbering))
        return backends[-1]

    yield open_backend
    for backend in backends:
        backend.cleanup()


def line_info(header, offset):
    with gpiod.Chip(header.path) as chip:
        return chip.get_line_info(offset)


def test_initial_value_then_writes(header, gpio):
    """Requested high (safe=on), the line is high at once; writes drive it low and high."""
    backend = gpio()
    verifyObject(IOutputBackend, backend)
    backend.setup_output(18, True)
    assert header.level(18) == 1
    info = line_info(header, 18)
    assert info.direction == gpiod.line.Direction.OUTPUT and info.used and info.consumer == "rpisensor"
    backend.write(18, False)
    assert header.level(18) == 0
    backend.write(18, True)
    assert header.level(18) == 1


def test_board_numbering(header, gpio):
    """BOARD pin 16 is line 23."""
    backend = gpio("board")
    backend.setup_output(16, True)
    assert header.level(23) == 1


def test_release_writes_safe_then_input(header, gpio):
    """Release: the safe level, then an input nobody holds (the pull decides the level from then on)."""
    backend = gpio()
    backend.setup_output(24, False)
    backend.write(24, True)
    backend.release_output(24, False)
    info = line_info(header, 24)
    assert info.direction == gpiod.line.Direction.INPUT and not info.used
    assert header.level(24) == 0  # the simulated pull-down holds it
    with pytest.raises(PinModeError):
        backend.write(24, True)
