"""
Choosing a backend by name: C{auto}, C{gpiod}, C{rpi} or C{sim}.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from twisted.logger import Logger

from rpisensor.hw.interfaces import GPIOUnavailable, IGPIOBackend

#: Backend name -> "module:factory", imported only when chosen.
BACKENDS = {
    "gpiod": "rpisensor.hw.gpiod:KernelGPIO",
    "rpi": "rpisensor.hw.rpi:RPiGPIO",
    "sim": "rpisensor.hw.simulated:SimulatedPWMGPIO",
}
BACKEND_NAMES = ("auto", *BACKENDS)

_log = Logger(namespace="rpisensor.hw")


def _load(name: str):
    module, _, attribute = BACKENDS[name].partition(":")
    return getattr(import_module(module), attribute)


@dataclass(frozen=True)
class BackendChoice:
    """
    Which backend a C{--gpio} name gives on this machine, and why, in words
    for the log.

    @ivar name: C{'rpi'} or C{'sim'}.
    @ivar fallback: C{auto} wanted real pins and fell back to simulated ones.
    """

    name: str
    why: str
    fallback: bool = False


def choose_backend(name: str) -> BackendChoice:
    """
    Decide what C{--gpio NAME} means here. C{auto} prefers the kernel's GPIO
    character device (C{gpiod}: every Pi, the Pi 5 included, with edge
    events) wherever a usable header chip exists, then C{RPi.GPIO} on a Pi,
    then simulated pins, and says why.

    @raise ValueError: C{name} is not a backend.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown GPIO backend {name!r}; use one of {', '.join(BACKEND_NAMES)}")
    if name != "auto":
        return BackendChoice(name, f"--gpio {name}")
    from rpisensor.hw.gpiod import find_header_chip
    from rpisensor.hw.rpi import check_available

    try:
        chip = find_header_chip()
    except GPIOUnavailable as no_chip:
        kernel = str(no_chip)
    else:
        return BackendChoice("gpiod", f"--gpio auto found the header's GPIO chip {chip}")
    try:
        check_available()
    except GPIOUnavailable as reason:
        return BackendChoice(
            "sim", f"real GPIO is not available (kernel GPIO: {kernel}; RPi.GPIO: {reason})", fallback=True
        )
    return BackendChoice("rpi", f"--gpio auto found a Raspberry Pi without kernel GPIO ({kernel})")


def open_chosen(choice: BackendChoice, numbering: str = "board", **sim_options) -> IGPIOBackend:
    """
    Open the backend of C{choice}, silently; C{sim_options} (latency,
    fail_every) go to the simulated backend.

    @raise GPIOUnavailable: real pins cannot work here.
    """
    if choice.name == "sim":
        return _load("sim")(numbering=numbering, **sim_options)
    return _load(choice.name)(numbering=numbering)


def open_backend(name: str, numbering: str = "board", **sim_options) -> IGPIOBackend:
    """
    Open the backend called C{name}.

    C{auto} means real pins on a Pi and simulated pins elsewhere, with a warning
    saying why. C{sim_options} (latency, fail_every) go to the simulated backend.
    (The roles use L{choose_backend} and L{open_chosen} instead, and say which
    pins they use in one line when they start.)

    @raise GPIOUnavailable: C{rpi} was asked for and cannot work here.
    @raise ValueError: C{name} is not a backend.
    """
    choice = choose_backend(name)
    if choice.fallback:
        _log.warn(
            "Using SIMULATED pins: {why}. "
            "Readings are not from hardware; pass --gpio rpi to insist on real pins.",
            why=choice.why,
        )
    return open_chosen(choice, numbering, **sim_options)
