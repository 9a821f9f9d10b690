"""
What every GPIO backend provides, and the errors they raise.
"""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import Attribute, Interface

PULLS = ("up", "down", "off")
NUMBERINGS = ("board", "bcm")


class GPIOError(Exception):
    """Base class of every GPIO problem rpisensor reports."""


class GPIOUnavailable(GPIOError, RuntimeError):
    """Real GPIO cannot work here; the message says why and what to do."""


class PinError(GPIOError, ValueError):
    """A channel number that is not a GPIO pin in the chosen numbering."""


class PinModeError(GPIOError, ValueError):
    """A pin was used in a way its set-up does not allow (e.g. read before set-up)."""


class SensorReadError(GPIOError, IOError):
    """Reading an input failed; the reading is unknown."""


class OutputWriteError(GPIOError, IOError):
    """Driving an output failed; its level is unknown."""


class IGPIOBackend(Interface):
    """
    Digital inputs, by channel number in one numbering scheme.

    C{setup_input}, C{read} and C{cleanup} may block (hardware, slow sensors):
    call them from a worker thread, never from the reactor thread.
    """

    name = Attribute("Short name of the backend: C{'rpi'} or C{'sim'}.")
    numbering = Attribute("Channel numbering: C{'board'} (header pins) or C{'bcm'}.")

    def setup_input(channel: int, pull: str, debounce: float = 0.0) -> None:
        """
        Make C{channel} an input with pull C{'up'}, C{'down'} or C{'off'}; a
        backend that filters bounces itself (the kernel's debounce) applies
        C{debounce} seconds, the others ignore it (the sampler filters).

        @raise PinError: C{channel} is not a GPIO pin.
        @raise GPIOUnavailable: the hardware cannot be accessed.
        """

    def read(channel: int) -> bool:
        """
        Return the level of input C{channel}: C{True} for high, C{False} for low.

        @raise PinModeError: C{channel} was not set up as an input.
        @raise SensorReadError: the read failed.
        """

    def cleanup() -> None:
        """Release the channels this backend set up, and only those."""


class IOutputBackend(Interface):
    """
    Digital outputs, on the same channel numbers as the backend's inputs.

    Every method may block (a driver call): call them from the backend's
    worker thread, never from the reactor thread.
    """

    def setup_output(channel: int, high: bool) -> None:
        """
        Make C{channel} an output driving C{high} from the first instant (the
        level is set before the pin leaves input mode, so it never glitches).

        @raise PinError: C{channel} is not a GPIO pin.
        @raise GPIOUnavailable: the hardware cannot be accessed, or the pin is in use.
        """

    def write(channel: int, high: bool) -> None:
        """
        Drive output C{channel} high or low (ending its PWM, if it had one).

        @raise PinModeError: C{channel} was not set up as an output.
        @raise OutputWriteError: the driver refused.
        """

    def release_output(channel: int, high: bool) -> None:
        """
        Write C{high} (the safe level), then return C{channel} to an input
        without pull, so that from then on the external pull resistor alone
        holds the line.
        """


class IPWMBackend(Interface):
    """An output backend that can also drive a pin with pulse-width modulation."""

    def pwm(channel: int, duty: float, frequency: float) -> None:
        """
        Drive output C{channel} high C{duty} percent of each period (0 to
        100) at C{frequency} Hz, until the next L{IOutputBackend.write} or C{pwm}.
        """


@dataclass(frozen=True)
class LevelChange:
    """
    One change of an input's level.

    @ivar when: wall-clock seconds of the change (the kernel's timestamp for
        edge events).
    @ivar lost: changes the backend knows it missed just before this one
        (the kernel's event buffer overflowed); the level is then read anew.
    """

    when: float
    channel: int
    high: bool
    lost: int = 0


class IEdgeSource(Interface):
    """
    A backend that knows when its inputs change (kernel edge events, or the
    simulated pins): no read is needed to know an input's level.
    """

    def watch(reactor, on_change) -> None:
        """
        Deliver every change of the inputs set up so far as a L{LevelChange}
        to C{on_change}, in the reactor's thread (the reactor watches a file
        descriptor: no thread per pin, no polling).
        """

    def unwatch() -> None:
        """Stop delivering changes."""

    def level(channel: int) -> bool:
        """The level the last change said, without a read; does not block."""
