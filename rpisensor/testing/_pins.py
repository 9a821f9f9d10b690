"""Simulated pins for tests."""

from __future__ import annotations

from rpisensor.hw.simulated import SimulatedGPIO


def simulated_pins(numbering: str = "board", latency: float = 0.0, clock=None) -> SimulatedGPIO:
    """Simulated pins with no latency: drive them with C{.pin(24).drive_low()}."""
    return SimulatedGPIO(numbering=numbering, latency=latency, clock=clock)
