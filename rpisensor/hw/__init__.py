"""
Pin and sensor backends: the real C{RPi.GPIO} on a Raspberry Pi, simulated pins elsewhere;
inputs, and the outputs C{serve --output} drives.

Backends are named and imported only when chosen, so a PC never imports
C{RPi.GPIO} and a Pi never pays for code it does not use.
"""

from rpisensor.hw.interfaces import (
    GPIOError,
    GPIOUnavailable,
    IGPIOBackend,
    IOutputBackend,
    IPWMBackend,
    OutputWriteError,
    PinError,
    PinModeError,
    SensorReadError,
)
from rpisensor.hw.select import BACKEND_NAMES, BackendChoice, choose_backend, open_backend, open_chosen

__all__ = [
    "BACKEND_NAMES",
    "BackendChoice",
    "GPIOError",
    "GPIOUnavailable",
    "IGPIOBackend",
    "IOutputBackend",
    "IPWMBackend",
    "OutputWriteError",
    "PinError",
    "PinModeError",
    "SensorReadError",
    "choose_backend",
    "open_backend",
    "open_chosen",
]
