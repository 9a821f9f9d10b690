"""
Simulated pins: the same rules as the hardware, driven from code.

Used when no Raspberry Pi is present, in demos, in tests and in the benchmark:
read latency and read failures can be injected to play a slow or flaky sensor.
"""

from __future__ import annotations

import threading
import time
from collections import deque
import os

from twisted.internet.interfaces import IReactorTime, IReadDescriptor
from zope.interface import implementer

from rpisensor.hw.interfaces import (
    NUMBERINGS,
    IEdgeSource,
    IGPIOBackend,
    IOutputBackend,
    IPWMBackend,
    LevelChange,
    PinError,
    PinModeError,
    SensorReadError,
)
from rpisensor.hw.pins import to_bcm


#: How many level changes L{SimulatedGPIO.history} keeps: the latest ones.
HISTORY_LENGTH = 1000


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


@implementer(IGPIOBackend, IEdgeSource, IOutputBackend)
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
    @param clock: the clock of the timestamps (L{history}, edge events); by default the wall clock.

    @ivar history: the latest L{HISTORY_LENGTH} level changes, oldest first
        (bounded, so a long-running demo pattern does not grow it for ever).
    @param edges: whether an input's level is known from its changes, as with
        kernel edge events (see L{watch}); by default yes, unless latency or
        failures are injected, since those play a sensor that must be read.

    Outputs drive the simulated level of their pin (L{level}, L{history});
    L{outputs} and L{duty} say what each output is doing, for tests and demos.
    Use L{SimulatedPWMGPIO} for outputs that also take PWM.
    """

    name = "sim"

    def __init__(
        self,
        numbering: str = "board",
        latency: float = 0.0,
        fail_every: int = 0,
        clock: IReactorTime | None = None,
        edges: bool | None = None,
    ) -> None:
        if numbering not in NUMBERINGS:
            raise PinError(f"unknown numbering {numbering!r}; use 'board' or 'bcm'")
        self.numbering = numbering
        self.latency = latency
        self.fail_every = fail_every
        # Timestamps are wall time, as the kernel stamps edge events (the reactor may schedule
        # on a monotonic clock: see rpisensor.app.clock).
        self._now = clock.seconds if clock is not None else time.time
        self._lock = threading.Lock()
        self._levels: dict[int, bool] = {}
        self._inputs: set[int] = set()
        self._failure: str | None = None
        self._gate = threading.Event()
        self._gate.set()
        self.reads = 0
        self.history: deque[LevelChange] = deque(maxlen=HISTORY_LENGTH)
        #: Whether L{watch} makes reads unnecessary (see the C{edges} parameter).
        self.tracks_levels = not (latency or fail_every) if edges is None else edges
        self._debounce: dict[int, float] = {}
        self._watch: _ChangePipe | None = None
        self._outputs: set[int] = set()
        #: Output channel -> its PWM duty in percent, while it has one.
        self.duty: dict[int, float] = {}
        #: Output channels returned to input by L{release_output}.
        self.released_outputs: set[int] = set()

    def setup_input(self, channel: int, pull: str, debounce: float = 0.0) -> None:
        to_bcm(self.numbering, channel)
        with self._lock:
            self._inputs.add(channel)
            self._levels.setdefault(channel, pull == "up")
            self._debounce[channel] = debounce

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
        self.unwatch()
        with self._lock:
            self._inputs.clear()

    # -- outputs ------------------------------------------------------------------------

    def setup_output(self, channel: int, high: bool) -> None:
        to_bcm(self.numbering, channel)
        with self._lock:
            self._outputs.add(channel)
            self.released_outputs.discard(channel)
        self.set_level(channel, high)

    def write(self, channel: int, high: bool) -> None:
        self._check_output(channel)
        self.duty.pop(channel, None)
        self.set_level(channel, high)

    def release_output(self, channel: int, high: bool) -> None:
        self.write(channel, high)
        with self._lock:
            self._outputs.discard(channel)
            self.released_outputs.add(channel)

    def _check_output(self, channel: int) -> None:
        with self._lock:
            if channel not in self._outputs:
                raise PinModeError(f"{self.numbering.upper()} {channel} was not set up as an output")

    @property
    def outputs(self) -> frozenset[int]:
        """The channels set up as outputs now."""
        with self._lock:
            return frozenset(self._outputs)

    def pin(self, channel: int) -> SimulatedPin:
        """A handle to drive C{channel}; the channel need not be set up yet."""
        to_bcm(self.numbering, channel)
        return SimulatedPin(self, channel)

    def set_level(self, channel: int, high: bool) -> None:
        """Drive C{channel} high (C{True}) or low (C{False}), as wiring would; from any thread."""
        to_bcm(self.numbering, channel)
        with self._lock:
            changed = self._levels.get(channel) != high
            self._levels[channel] = high
            change = LevelChange(self._now(), channel, high)
            self.history.append(change)
            watch = self._watch if channel in self._inputs else None
        if watch is not None and changed:
            watch.put(change)

    def watch(self, reactor, on_change) -> None:
        """
        Deliver level changes as the kernel's edge events are: through a pipe
        the reactor watches, so that the same reactor path runs as on a Pi,
        whichever thread drove the pin. An input set up with a debounce
        reports a change only once the level has held for that long.
        """
        self.unwatch()
        self._watch = _ChangePipe(reactor, on_change, self._debounced, self.level)
        reactor.addReader(self._watch)

    def unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()

    def _debounced(self, channel: int) -> float:
        return self._debounce.get(channel, 0.0)

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


@implementer(IPWMBackend)
class SimulatedPWMGPIO(SimulatedGPIO):
    """Simulated pins whose outputs also take PWM: the duty is kept in L{SimulatedGPIO.duty}."""

    def pwm(self, channel: int, duty: float, frequency: float) -> None:
        self._check_output(channel)
        self.duty[channel] = duty
        self.set_level(channel, duty > 0)


@implementer(IReadDescriptor)
class _ChangePipe:
    """
    The simulated pins' edge events: changes are queued with one byte written
    to a pipe (from any thread); the reactor reads the pipe and delivers them.
    """

    def __init__(self, reactor, on_change, debounce_of, level_of) -> None:
        self._reactor = reactor
        self._on_change = on_change
        self._debounce_of = debounce_of
        self._level_of = level_of
        self._queue: deque[LevelChange] = deque()
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._read_end, False)
        os.set_blocking(self._write_end, False)
        self._settling: dict[int, object] = {}
        self._reported: dict[int, bool] = {}

    def put(self, change: LevelChange) -> None:
        self._queue.append(change)
        try:
            os.write(self._write_end, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the reactor has bytes to read, and reads the whole queue

    def fileno(self) -> int:
        return self._read_end

    def logPrefix(self) -> str:
        return "simulated pins"

    def doRead(self):
        try:
            while os.read(self._read_end, 4096):
                pass
        except BlockingIOError:
            pass
        while self._queue:
            change = self._queue.popleft()
            debounce = self._debounce_of(change.channel)
            if debounce <= 0:
                self._report(change)
                continue
            pending = self._settling.pop(change.channel, None)
            if pending is not None and pending.active():
                pending.cancel()
            self._settling[change.channel] = self._reactor.callLater(debounce, self._settled, change)

    def _settled(self, change: LevelChange) -> None:
        # The kernel's semantics: report only a level that held for the whole period.
        self._settling.pop(change.channel, None)
        if self._level_of(change.channel) == change.high:
            self._report(LevelChange(change.when + self._debounce_of(change.channel), change.channel, change.high))

    def _report(self, change: LevelChange) -> None:
        if self._reported.get(change.channel) == change.high:
            return
        self._reported[change.channel] = change.high
        self._on_change(change)

    def connectionLost(self, reason) -> None:
        pass

    def close(self) -> None:
        self._reactor.removeReader(self)
        for call in self._settling.values():
            if call.active():
                call.cancel()
        for fd in (self._read_end, self._write_end):
            os.close(fd)
