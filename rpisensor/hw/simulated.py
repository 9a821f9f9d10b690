"""
Simulated pins: the same rules as the hardware, driven from code.

Used when no Raspberry Pi is present, in demos, in tests and in the benchmark:
read latency and read failures can be injected to play a slow or flaky sensor.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from rpisensor.hw.interfaces import NUMBERINGS, IGPIOBackend, PinError, PinModeError, SensorReadError
from rpisensor.hw.pins import to_bcm


#: How many level changes L{SimulatedGPIO.history} keeps: the latest ones.
HISTORY_LENGTH = 1000


@dataclass(frozen=True)
class LevelChange:
    """One entry of a pin's history: when (clock seconds) and the new level."""

    when: float
    channel: int
    high: bool


class SimulatedPin:
    """A handle on one channel, so tests read like wiring: C{pin.drive_low()}."""

    def __init__(self, backend: SimulatedGPIO, channel: int) -> None:
        self._backend = backend
        self.channel = channel

    def drive_low(self) -> None:
        self._backend.set_level(self.channel, False)

    def drive_high(self) -> None:
        self._backend.set_level(self.channel, True)

    @property
    def high(self) -> bool:
        return self._backend.level(self.channel)


@implementer(IGPIOBackend)
class SimulatedGPIO:
    """
    Simulated digital inputs.

    An input set up with a pull-up reads high until driven low (a released
    button), pull-down or no pull reads low. C{read} sleeps C{latency} seconds
    in the calling (worker) thread, like a slow sensor, and raises
    L{SensorReadError} when failures are injected.

    @param numbering: C{'board'} or C{'bcm'}; channels are checked against the
        real header, so a wrong pin fails here as it would on a Pi.
    @param latency: seconds each read takes.
    @param fail_every: if non-zero, every C{fail_every}-th read fails.
    @param clock: timestamps for L{history}; defaults to the reactor.

    @ivar history: the latest L{HISTORY_LENGTH} level changes, oldest first
        (bounded, so a long-running demo pattern does not grow it for ever).
    """

    name = "sim"

    def __init__(
        self,
        numbering: str = "board",
        latency: float = 0.0,
        fail_every: int = 0,
        clock: IReactorTime | None = None,
    ) -> None:
        if numbering not in NUMBERINGS:
            raise PinError(f"unknown numbering {numbering!r}; use 'board' or 'bcm'")
        self.numbering = numbering
        self.latency = latency
        self.fail_every = fail_every
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._lock = threading.Lock()
        self._levels: dict[int, bool] = {}
        self._inputs: set[int] = set()
        self._failure: str | None = None
        self._gate = threading.Event()
        self._gate.set()
        self.reads = 0
        self.history: deque[LevelChange] = deque(maxlen=HISTORY_LENGTH)

    def setup_input(self, channel: int, pull: str) -> None:
        to_bcm(self.numbering, channel)
        with self._lock:
            self._inputs.add(channel)
            self._levels.setdefault(channel, pull == "up")

    def read(self, channel: int) -> bool:
        with self._lock:
            if channel not in self._inputs:
                raise PinModeError(
                    f"{self.numbering.upper()} {channel} was not set up as an input"
                )
            self.reads += 1
            count = self.reads
            failure = self._failure
        self._gate.wait()
        if self.latency:
            time.sleep(self.latency)
        if failure is None and self.fail_every and count % self.fail_every == 0:
            failure = f"simulated failure of read number {count}"
        if failure is not None:
            raise SensorReadError(failure)
        with self._lock:
            return self._levels[channel]

    def cleanup(self) -> None:
        with self._lock:
            self._inputs.clear()

    def pin(self, channel: int) -> SimulatedPin:
        """A handle to drive C{channel}; the channel need not be set up yet."""
        to_bcm(self.numbering, channel)
        return SimulatedPin(self, channel)

    def set_level(self, channel: int, high: bool) -> None:
        """Drive C{channel} high (C{True}) or low (C{False}), as wiring would."""
        to_bcm(self.numbering, channel)
        with self._lock:
            self._levels[channel] = high
            self.history.append(LevelChange(self._clock.seconds(), channel, high))

    def level(self, channel: int) -> bool:
        """The level C{channel} would read now, without counting a read."""
        with self._lock:
            return self._levels.get(channel, False)

    def fail_reads(self, message: str | None) -> None:
        """Make every read fail with C{message} until called with C{None}."""
        with self._lock:
            self._failure = message

    def pause_reads(self) -> None:
        """Hold every read that starts from now on until L{resume_reads}: a sensor
        that takes as long as the test wants, without timing."""
        self._gate.clear()

    def resume_reads(self) -> None:
        """Let held and future reads finish."""
        self._gate.set()

    @property
    def set_up_channels(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._inputs)
