"""
The kernel's GPIO character device, through the official libgpiod v2 Python
bindings (C{gpiod} on PyPI): the backend that works on every Pi, the Pi 5
included, and that knows the instant a pin changes.

Each input is one line request with its bias, both edges and the kernel's
debounce; the request's file descriptor is watched by the reactor (an
C{IReadDescriptor}: no thread per pin, no polling), and each edge event
carries the kernel's timestamp. The only module that imports C{gpiod}.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from rpisensor.hw.interfaces import (
    NUMBERINGS,
    GPIOUnavailable,
    IEdgeSource,
    IGPIOBackend,
    IOutputBackend,
    LevelChange,
    OutputWriteError,
    PinError,
    PinModeError,
    SensorReadError,
)
from rpisensor.hw.pins import to_bcm

#: Labels of the chips that carry the 40-pin header, newest Pi first. On a
#: Pi 5 the header moved from gpiochip4 to gpiochip0 in kernel 6.6: the label
#: finds it either way.
HEADER_LABELS = ("pinctrl-rp1", "pinctrl-bcm2712", "pinctrl-bcm2711", "pinctrl-bcm2835")

#: Edge events the kernel keeps per line before it drops the oldest (its default is 16).
EVENT_BUFFER = 256

CONSUMER = "rpisensor"


def _gpiod():
    try:
        import gpiod
    except ImportError:
        raise GPIOUnavailable(
            "the gpiod library (libgpiod v2 bindings) is not installed: pip install gpiod"
        ) from None
    return gpiod


def find_header_chip(pattern: str = "/dev/gpiochip*", gpiod=None) -> str:
    """
    The path of the chip that carries the 40-pin header, found by its label.

    @raise GPIOUnavailable: no GPIO character device, no access to one, or no
        chip with a header's label; the message says which and what to do.
    """
    paths = sorted(glob.glob(pattern), key=lambda p: (len(p), p))
    if not paths:
        raise GPIOUnavailable(f"no GPIO character device ({pattern}): this kernel has no GPIO support")
    gpiod = gpiod if gpiod is not None else _gpiod()
    labels: dict[str, str] = {}
    denied = []
    for path in paths:
        if not os.access(path, os.R_OK | os.W_OK):
            denied.append(path)
            continue
        try:
            if not gpiod.is_gpiochip_device(path):
                continue
            with gpiod.Chip(path) as chip:
                labels[path] = chip.get_info().label
        except OSError:
            denied.append(path)
    for wanted in HEADER_LABELS:
        for path, label in labels.items():
            if label == wanted:
                return path
    if denied and not labels:
        raise GPIOUnavailable(
            f"no access to {', '.join(denied)}: add this user to the gpio group "
            "(sudo adduser $USER gpio), then log in again"
        )
    found = ", ".join(f"{path} ({label})" for path, label in labels.items()) or "none usable"
    raise GPIOUnavailable(
        f"no GPIO chip with a Raspberry Pi header's label ({', '.join(HEADER_LABELS)}); found: {found}"
    )


@dataclass
class _Line:
    channel: int
    offset: int
    request: object
    debounce: float
    #: The level as the last event (or read) said, and that event's line seqno.
    high: bool = False
    seqno: int = 0


@implementer(IReadDescriptor)
class _EdgeReader:
    """Reads one line request's edge events when the reactor says its descriptor is readable."""

    def __init__(self, backend: KernelGPIO, line: _Line) -> None:
        self._backend = backend
        self._line = line

    def fileno(self) -> int:
        return self._line.request.fd

    def logPrefix(self) -> str:
        return f"gpiod line {self._line.offset}"

    def doRead(self):
        self._backend._events(self._line)

    def connectionLost(self, reason) -> None:
        pass


@implementer(IGPIOBackend, IEdgeSource, IOutputBackend)
class KernelGPIO:
    """
    Inputs and outputs on the kernel's GPIO character device (no PWM: the
    character device has none; an output is one line request made with its
    initial value, so the pin drives that level from the first instant).

    @param numbering: C{'board'} (header pins) or C{'bcm'}; the header chip's
        line offsets are BCM numbers on every Pi.
    @param chip: the chip's device path; found by label when C{None}.
    @param gpiod: the C{gpiod} module; tests may pass a stand-in.
    """

    name = "gpiod"
    _log = Logger(namespace="rpisensor.hw.gpiod")

    def __init__(self, numbering: str = "board", chip: str | None = None, gpiod=None,
                 event_buffer: int = EVENT_BUFFER) -> None:  # fmt: skip
        if numbering not in NUMBERINGS:
            raise PinError(f"unknown numbering {numbering!r}; use 'board' or 'bcm'")
        self._gpiod = gpiod if gpiod is not None else _gpiod()
        self.numbering = numbering
        self.chip = chip if chip is not None else find_header_chip(gpiod=self._gpiod)
        self.event_buffer = event_buffer
        self._lines: dict[int, _Line] = {}
        #: Output channel -> (its line offset, its line request).
        self._outputs: dict[int, tuple[int, object]] = {}
        self._readers: list[_EdgeReader] = []
        self._reactor = None
        self._on_change: Callable[[LevelChange], object] | None = None
        #: Edge events the kernel dropped (its buffer overflowed), per channel.
        self.lost: dict[int, int] = {}

    def setup_input(self, channel: int, pull: str, debounce: float = 0.0) -> None:
        gpiod = self._gpiod
        Bias, Clock, Direction, Edge, Value = (
            gpiod.line.Bias, gpiod.line.Clock, gpiod.line.Direction, gpiod.line.Edge, gpiod.line.Value
        )  # fmt: skip
        offset = to_bcm(self.numbering, channel)
        bias = {"up": Bias.PULL_UP, "down": Bias.PULL_DOWN, "off": Bias.DISABLED}[pull]
        settings = gpiod.LineSettings(
            direction=Direction.INPUT,
            bias=bias,
            edge_detection=Edge.BOTH,
            debounce_period=timedelta(seconds=debounce),
            event_clock=Clock.REALTIME,
        )
        try:
            request = gpiod.request_lines(
                self.chip, consumer=CONSUMER, config={offset: settings},
                event_buffer_size=self.event_buffer,
            )  # fmt: skip
        except OSError as e:
            raise GPIOUnavailable(
                f"cannot request line {offset} ({self.numbering.upper()} {channel}) of {self.chip}: "
                f"{e.strerror or e} (is another program using it?)"
            ) from None
        line = _Line(channel, offset, request, debounce)
        line.high = request.get_value(offset) == Value.ACTIVE
        old = self._lines.get(channel)
        if old is not None:
            old.request.release()
        self._lines[channel] = line

    def read(self, channel: int) -> bool:
        line = self._lines.get(channel)
        if line is None:
            raise PinModeError(f"{self.numbering.upper()} {channel} was not set up as an input")
        try:
            return line.request.get_value(line.offset) == self._gpiod.line.Value.ACTIVE
        except OSError as e:
            raise SensorReadError(f"reading line {line.offset} of {self.chip} failed: {e}") from None

    def level(self, channel: int) -> bool:
        """The level the last edge said, without a read: what an edge-tracked input answers."""
        return self._lines[channel].high

    def watch(self, reactor, on_change: Callable[[LevelChange], object]) -> None:
        self._reactor = reactor
        self._on_change = on_change
        for line in self._lines.values():
            reader = _EdgeReader(self, line)
            self._readers.append(reader)
            reactor.addReader(reader)

    def unwatch(self) -> None:
        if self._reactor is not None:
            for reader in self._readers:
                self._reactor.removeReader(reader)
        self._readers = []
        self._on_change = None

    def _events(self, line: _Line) -> None:
        try:
            events = line.request.read_edge_events()
        except OSError as e:
            self._log.error("Reading edge events of line {offset} failed: {error}", offset=line.offset, error=e)
            return
        rising = self._gpiod.EdgeEvent.Type.RISING_EDGE
        for event in events:
            lost = 0
            if event.line_seqno != line.seqno + 1:  # the kernel numbers a line's events from 1
                lost = event.line_seqno - line.seqno - 1
                self.lost[line.channel] = self.lost.get(line.channel, 0) + lost
            line.seqno = event.line_seqno
            high = event.event_type == rising  # after a gap too: this edge says the level
            if high == line.high and not lost:
                continue
            line.high = high
            if self._on_change is not None:
                self._on_change(LevelChange(event.timestamp_ns / 1e9, line.channel, high, lost))

    # -- outputs ------------------------------------------------------------------------

    def setup_output(self, channel: int, high: bool) -> None:
        gpiod = self._gpiod
        offset = to_bcm(self.numbering, channel)
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.OUTPUT, output_value=self._value(high)
        )
        try:
            request = gpiod.request_lines(self.chip, consumer=CONSUMER, config={offset: settings})
        except OSError as e:
            raise GPIOUnavailable(
                f"cannot request line {offset} ({self.numbering.upper()} {channel}) of {self.chip} "
                f"as an output: {e.strerror or e} (is another program using it?)"
            ) from None
        old = self._outputs.get(channel)
        if old is not None:
            old[1].release()
        self._outputs[channel] = (offset, request)

    def write(self, channel: int, high: bool) -> None:
        output = self._outputs.get(channel)
        if output is None:
            raise PinModeError(f"{self.numbering.upper()} {channel} was not set up as an output")
        offset, request = output
        try:
            request.set_value(offset, self._value(high))  # one ioctl: does not block
        except OSError as e:
            raise OutputWriteError(f"driving line {offset} of {self.chip} failed: {e}") from None

    def release_output(self, channel: int, high: bool) -> None:
        self.write(channel, high)
        offset, request = self._outputs.pop(channel)
        gpiod = self._gpiod
        try:
            request.reconfigure_lines(
                {offset: gpiod.LineSettings(direction=gpiod.line.Direction.INPUT, bias=gpiod.line.Bias.DISABLED)}
            )
        finally:
            request.release()

    def _value(self, high: bool):
        Value = self._gpiod.line.Value
        return Value.ACTIVE if high else Value.INACTIVE

    def cleanup(self) -> None:
        self.unwatch()
        for line in self._lines.values():
            try:
                line.request.release()
            except OSError:
                pass
        self._lines.clear()
