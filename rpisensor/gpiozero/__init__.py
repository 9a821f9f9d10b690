"""
gpiozero's pins and sensors of a Pi running C{rpisensor serve}, from any
machine: C{GPIOZERO_PIN_FACTORY=rpisensor} (with C{RPISENSOR_HOST}), or

    from gpiozero import Button, Device
    from rpisensor.gpiozero import RpisensorFactory

    Device.pin_factory = RpisensorFactory(host="raspberrypi.local")

gpiozero is an optional dependency (C{pip install 'rpisensor[gpiozero]'}):
it is imported only when one of these names is used.
"""

from __future__ import annotations

__all__ = ["RemoteSensor", "RpisensorFactory"]

_HOMES = {
    "RpisensorFactory": "rpisensor.gpiozero.factory",
    "RemoteSensor": "rpisensor.gpiozero.sensor",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import gpiozero  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"rpisensor's remote pins need gpiozero ({e}): pip install 'rpisensor[gpiozero]'"
        ) from None
    from importlib import import_module

    return getattr(import_module(home), name)
