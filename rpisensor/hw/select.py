"""
Choosing a backend by name: C{auto}, C{rpi} or C{sim}.
"""

from __future__ import annotations

from importlib import import_module

from twisted.logger import Logger

from rpisensor.hw.interfaces import GPIOUnavailable, IGPIOBackend

#: Backend name -> "module:factory", imported only when chosen.
BACKENDS = {
    "rpi": "rpisensor.hw.rpi:RPiGPIO",
    "sim": "rpisensor.hw.simulated:SimulatedGPIO",
}
BACKEND_NAMES = ("auto", *BACKENDS)

_log = Logger(namespace="rpisensor.hw")


def _load(name: str):
    module, _, attribute = BACKENDS[name].partition(":")
    return getattr(import_module(module), attribute)


def open_backend(name: str, numbering: str = "board", **sim_options) -> IGPIOBackend:
    """
    Open the backend called C{name}.

    C{auto} means real pins on a Pi and simulated pins elsewhere, with a warning
    saying why. C{sim_options} (latency, fail_every) go to the simulated backend.

    @raise GPIOUnavailable: C{rpi} was asked for and cannot work here.
    @raise ValueError: C{name} is not a backend.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown GPIO backend {name!r}; use one of {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        from rpisensor.hw.rpi import check_available

        try:
            check_available()
        except GPIOUnavailable as reason:
            _log.warn(
                "Using SIMULATED pins: real GPIO is not available ({reason}). "
                "Readings are not from hardware; pass --gpio rpi to insist on real pins.",
                reason=str(reason),
            )
            name = "sim"
        else:
            name = "rpi"
    if name == "sim":
        return _load("sim")(numbering=numbering, **sim_options)
    return _load("rpi")(numbering=numbering)
