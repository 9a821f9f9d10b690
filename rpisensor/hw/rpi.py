"""
The real GPIO backend. The only module that imports C{RPi.GPIO}.

C{RPi.GPIO} itself drives every Pi up to the Pi 4; on a Pi 5 (whose pins sit
behind the RP1 chip) the C{rpi-lgpio} package provides the same module.
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

from zope.interface import implementer

from rpisensor.hw.interfaces import (
    NUMBERINGS,
    GPIOUnavailable,
    IGPIOBackend,
    IOutputBackend,
    IPWMBackend,
    OutputWriteError,
    PinError,
    PinModeError,
    SensorReadError,
)
from rpisensor.hw.pins import to_bcm

CPUINFO = Path("/proc/cpuinfo")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
GPIOMEM = Path("/dev/gpiomem")

#: Board types (bits 4-11 of a new-style revision code) whose GPIO sits
#: behind the RP1 chip, which classic RPi.GPIO cannot drive: Pi 5, CM5, Pi 500.
_RP1_BOARD_TYPES = frozenset({0x17, 0x18, 0x19})


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").replace("\0", "")
    except OSError:
        return ""


def describe_board(cpuinfo: str, model: str) -> tuple[bool, bool]:
    """
    From the text of C{/proc/cpuinfo} and the device-tree model, tell whether
    this is a Raspberry Pi, and whether it is one of the RP1 family (Pi 5).
    """
    is_pi = model.startswith("Raspberry Pi") or bool(
        re.search(r"^Hardware\s*:\s*BCM\d+", cpuinfo, re.MULTILINE)
    )
    rp1 = any(name in model for name in ("Raspberry Pi 5", "Raspberry Pi 500", "Compute Module 5"))
    revision = re.search(r"^Revision\s*:\s*([0-9a-fA-F]+)", cpuinfo, re.MULTILINE)
    if revision:
        is_pi = is_pi or "Raspberry Pi" in cpuinfo
        code = int(revision.group(1), 16)
        if code & (1 << 23):  # new-style revision code: the type is in bits 4-11
            rp1 = rp1 or ((code >> 4) & 0xFF) in _RP1_BOARD_TYPES
    return is_pi, rp1


def _has_lgpio_shim() -> bool:
    try:
        metadata.distribution("rpi-lgpio")
    except metadata.PackageNotFoundError:
        return False
    return True


def check_available() -> None:
    """
    Raise L{GPIOUnavailable} with the reason and the fix if real GPIO cannot
    work here; return quietly if it can.
    """
    is_pi, rp1 = describe_board(_read_text(CPUINFO), _read_text(DEVICE_TREE_MODEL))
    if not is_pi:
        raise GPIOUnavailable(
            "this machine is not a Raspberry Pi (no BCM hardware in /proc/cpuinfo)"
        )
    lgpio = _has_lgpio_shim()
    if rp1 and not lgpio:
        raise GPIOUnavailable(
            "this is a Raspberry Pi 5, which RPi.GPIO cannot drive; "
            "install rpi-lgpio instead: pip uninstall RPi.GPIO && pip install rpi-lgpio"
        )
    try:
        import RPi.GPIO  # noqa: F401
    except ImportError:
        raise GPIOUnavailable(
            "the RPi.GPIO library is not installed: pip install RPi.GPIO "
            "(on a Pi 5: pip install rpi-lgpio)"
        ) from None
    except RuntimeError as e:
        raise GPIOUnavailable(f"RPi.GPIO refused to load: {e}") from None
    if not lgpio and not os.access(GPIOMEM, os.R_OK | os.W_OK) and os.geteuid() != 0:
        raise GPIOUnavailable(
            f"no access to {GPIOMEM}: add this user to the gpio group "
            "(sudo adduser $USER gpio), then log in again"
        )


@implementer(IGPIOBackend, IOutputBackend, IPWMBackend)
class RPiGPIO:
    """
    Inputs read and outputs driven through C{RPi.GPIO} (PWM is the library's
    software PWM, a thread of its own per pin).

    @param numbering: C{'board'} (header pins, as the tutorial) or C{'bcm'}.
    @param gpio: the C{RPi.GPIO} module; tests may pass a stand-in.
    """

    name = "rpi"
    #: A read is a read of a memory-mapped register (about a microsecond): inputs are
    #: polled in a thread of their own (L{rpisensor.sensing.polling}), not through the read pool.
    fast_reads = True

    def __init__(self, numbering: str = "board", gpio=None) -> None:
        if gpio is None:
            check_available()
            import RPi.GPIO as gpio
        if numbering not in NUMBERINGS:
            raise PinError(f"unknown numbering {numbering!r}; use 'board' or 'bcm'")
        self._gpio = gpio
        self.numbering = numbering
        self._channels: list[int] = []
        self._outputs: set[int] = set()
        #: Output channel -> its running C{GPIO.PWM} object and frequency.
        self._pwm: dict[int, tuple[object, float]] = {}
        gpio.setwarnings(False)
        mode = gpio.BOARD if numbering == "board" else gpio.BCM
        try:
            gpio.setmode(mode)
        except ValueError as e:  # another user of the module chose the other numbering
            raise GPIOUnavailable(f"cannot use {numbering.upper()} numbering: {e}") from None

    def setup_input(self, channel: int, pull: str, debounce: float = 0.0) -> None:
        # RPi.GPIO's own bouncetime is for its edge threads, which are not used:
        # the sampler filters bounces across its samples instead.
        to_bcm(self.numbering, channel)
        g = self._gpio
        pud = {"up": g.PUD_UP, "down": g.PUD_DOWN, "off": g.PUD_OFF}[pull]
        try:
            g.setup(channel, g.IN, pull_up_down=pud)
        except RuntimeError as e:
            raise GPIOUnavailable(f"cannot set up {self.numbering.upper()} {channel}: {e}") from None
        if channel not in self._channels:
            self._channels.append(channel)

    def read(self, channel: int) -> bool:
        if channel not in self._channels:
            raise PinModeError(f"{self.numbering.upper()} {channel} was not set up as an input")
        try:
            return self._gpio.input(channel) == self._gpio.HIGH
        except RuntimeError as e:
            raise SensorReadError(f"reading {self.numbering.upper()} {channel} failed: {e}") from None

    def cleanup(self) -> None:
        if self._channels:
            self._gpio.cleanup(self._channels)
            self._channels = []

    # -- outputs ------------------------------------------------------------------------

    def setup_output(self, channel: int, high: bool) -> None:
        # RPi.GPIO writes the initial level before it switches the pin to output.
        to_bcm(self.numbering, channel)
        g = self._gpio
        try:
            g.setup(channel, g.OUT, initial=g.HIGH if high else g.LOW)
        except RuntimeError as e:
            raise GPIOUnavailable(f"cannot set up {self.numbering.upper()} {channel}: {e}") from None
        self._outputs.add(channel)

    def write(self, channel: int, high: bool) -> None:
        self._check_output(channel)
        self._end_pwm(channel)
        try:
            self._gpio.output(channel, self._gpio.HIGH if high else self._gpio.LOW)
        except RuntimeError as e:
            raise OutputWriteError(f"driving {self.numbering.upper()} {channel} failed: {e}") from None

    def pwm(self, channel: int, duty: float, frequency: float) -> None:
        self._check_output(channel)
        running = self._pwm.get(channel)
        try:
            if running is not None and running[1] == frequency:
                running[0].ChangeDutyCycle(duty)
                return
            self._end_pwm(channel)
            pwm = self._gpio.PWM(channel, frequency)
            pwm.start(duty)
        except (RuntimeError, ValueError) as e:
            raise OutputWriteError(f"PWM on {self.numbering.upper()} {channel} failed: {e}") from None
        self._pwm[channel] = (pwm, frequency)

    def release_output(self, channel: int, high: bool) -> None:
        self.write(channel, high)
        self._gpio.cleanup(channel)  # back to input, no pull
        self._outputs.discard(channel)

    def _end_pwm(self, channel: int) -> None:
        running = self._pwm.pop(channel, None)
        if running is not None:
            running[0].stop()

    def _check_output(self, channel: int) -> None:
        if channel not in self._outputs:
            raise PinModeError(f"{self.numbering.upper()} {channel} was not set up as an output")
