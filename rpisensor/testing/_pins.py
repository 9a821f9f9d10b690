"""Simulated pins for tests."""

from __future__ import annotations

from rpisensor.hw.simulated import SimulatedGPIO


def simulated_pins(
    numbering: str = "board", latency: float = 0.0, clock=None, edges: bool | None = None
) -> SimulatedGPIO:
    """
    Simulated pins: drive them with C{.pin(24).drive_low()}.

    @param edges: whether the server knows their level from their changes, as
        with the kernel's edge events (no read for C{go}); by default yes
        unless C{latency} plays a slow sensor. Pass C{False} to make every
        C{go} read the pin, e.g. to test reads that fail (C{fail_reads}) or
        hang (C{pause_reads}).
    """
    return SimulatedGPIO(numbering=numbering, latency=latency, clock=clock, edges=edges)
