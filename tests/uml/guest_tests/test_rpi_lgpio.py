"""
rpi-lgpio (the RPi.GPIO module a Pi 5 needs, on top of lgpio and the kernel's GPIO device) on
the same gpio-sim chip, told it is a Pi 5 by RPI_LGPIO_REVISION: the RPi.GPIO API works there,
and so does rpisensor's RPi.GPIO backend through it.

build-kernel.sh installs rpi-lgpio and lgpio into the venv's own rpi-lgpio/ directory, apart
from the real RPi.GPIO the emulated-Pi tests use; this file imports it from there.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

LGPIO_DIR = Path(sys.prefix) / "rpi-lgpio"
PI5_REVISION = "c04170"  # a Raspberry Pi 5, 4 GB


@pytest.fixture
def lgpio_module(header, monkeypatch):
    """The RPi.GPIO module of rpi-lgpio, on the header chip, believing it runs on a Pi 5."""
    if not (LGPIO_DIR / "RPi").is_dir():
        pytest.fail(f"{LGPIO_DIR} has no rpi-lgpio: run tests/uml/build-kernel.sh")
    monkeypatch.setenv("RPI_LGPIO_CHIP", header.path.rsplit("gpiochip", 1)[1])
    monkeypatch.setenv("RPI_LGPIO_REVISION", PI5_REVISION)
    monkeypatch.setenv("LG_WD", "/tmp")  # lgpio keeps its notification pipes in a writable directory
    monkeypatch.chdir("/tmp")
    for name in [m for m in sys.modules if m == "RPi" or m.startswith(("RPi.", "lgpio", "_lgpio"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(LGPIO_DIR))
    gpio = importlib.import_module("RPi.GPIO")
    assert Path(gpio.__file__).is_relative_to(LGPIO_DIR), gpio.__file__
    yield gpio
    gpio.cleanup()


def test_rpi_gpio_api_on_the_kernel_device(header, lgpio_module):
    """The tutorial's calls: BOARD pin 24 with a pull-up reads high, and low once pulled down."""
    GPIO = lgpio_module
    GPIO.setmode(GPIO.BOARD)
    GPIO.setup(24, GPIO.IN, GPIO.PUD_UP)
    assert GPIO.input(24) == GPIO.HIGH
    header.pull(8, False)  # BOARD 24 is BCM 8
    assert GPIO.input(24) == GPIO.LOW


def test_output(header, lgpio_module):
    """An output set high shows on the simulated line."""
    GPIO = lgpio_module
    GPIO.setmode(GPIO.BCM)
    GPIO.setup(18, GPIO.OUT, initial=GPIO.LOW)
    assert header.level(18) == 0
    GPIO.output(18, GPIO.HIGH)
    assert header.level(18) == 1


def test_rpisensor_backend_through_rpi_lgpio(header, lgpio_module):
    """rpisensor's RPi.GPIO backend reads through rpi-lgpio as through the real library."""
    from rpisensor.hw.rpi import RPiGPIO

    backend = RPiGPIO("board", gpio=lgpio_module)
    backend.setup_input(24, "up")
    assert backend.read(24) is True
    header.pull(8, False)
    assert backend.read(24) is False
    backend.cleanup()
    assert os.environ["RPI_LGPIO_REVISION"] == PI5_REVISION


def test_rpisensor_outputs_through_rpi_lgpio(header, lgpio_module):
    """rpisensor's outputs on a Pi 5: set up at their safe level, driven, PWM, then the safe level and input."""
    from rpisensor.hw.rpi import RPiGPIO

    backend = RPiGPIO("board", gpio=lgpio_module)
    backend.setup_output(12, True)  # BOARD 12 is BCM 18
    assert header.level(18) == 1
    backend.write(12, False)
    assert header.level(18) == 0
    backend.pwm(12, 50, 100)
    backend.pwm(12, 20, 100)  # a new duty on the running PWM
    backend.write(12, True)  # ends the PWM: the level holds
    assert header.level(18) == 1
    backend.release_output(12, False)
    assert header.level(18) == 0
    backend.cleanup()
