"""
A Raspberry Pi 3, emulated well enough for the real C{RPi.GPIO} on any Linux
machine (root only), so the real library can be tested without a Pi.

L{EmulatedPi.command} wraps a command so that it runs in a private mount
namespace (C{unshare -m --propagation private}) in which:

  - C{/proc/cpuinfo} is a Pi 3's (C{Hardware: BCM2835}, C{Revision: a02082}),
    so both C{RPi.GPIO} and rpisensor believe they are on a Pi;
  - C{/dev} is an overlay on the real C{/dev}, whose changes land in a temporary
    directory (the real C{/dev} is never written), and C{/dev/gpiomem} on it is
    a bind mount of a 4096-byte file in that directory.

C{RPi.GPIO} maps C{/dev/gpiomem} as the GPIO registers, and an input's level is
bit N (its BCM number) of the little-endian word GPLEV0 at offset C{0x34}. The
file is shared with this process, so L{EmulatedPi.set_levels} changes what the
library reads while the command runs. The mounts disappear with the namespace,
when its last process exits.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Offset of GPLEV0, the levels of BCM 0 to 31, in the GPIO register block.
GPLEV0 = 0x34
#: Offsets of GPSET0 and GPCLR0: bit N written 1 drives BCM N high, or low.
GPSET0 = 0x1C
GPCLR0 = 0x28
#: Offset of GPFSEL0; each GPFSELn holds 3 function bits for each of BCM 10n to 10n+9.
GPFSEL0 = 0x00
#: Function select values: input, output.
INPUT, OUTPUT = 0b000, 0b001
GPIOMEM_SIZE = 4096

CPUINFO = (
    "processor\t: 0\n"
    "model name\t: ARMv7 Processor rev 4 (v7l)\n"
    "Hardware\t: BCM2835\n"
    "Revision\t: a02082\n"
    "Serial\t\t: 00000000c0ffee00\n"
    "Model\t\t: Raspberry Pi 3 Model B Rev 1.2\n"
)

_NAMESPACE_SETUP = """\
set -e
mount --bind {cpuinfo} /proc/cpuinfo
mount -t overlay overlay -o lowerdir=/dev,upperdir={upper},workdir={work} /dev
: > /dev/gpiomem
mount --bind {gpiomem} /dev/gpiomem
exec "$@"
"""


#: Why the emulated-Pi tests skip where the real library is absent, and how to get it.
NO_LIBRARY = "RPi.GPIO is not installed: pip install -e '.[emulated-pi]' (needs a C compiler)"


def unavailable_reason() -> str | None:
    """
    Why the emulation cannot run in this process, or C{None} if it may: every
    missing prerequisite, each with what to do. (Whether this kernel lets root
    make the mounts is only known by trying: see L{EmulatedPi.probe}.)
    """
    missing = []
    try:
        found = importlib.util.find_spec("RPi.GPIO") is not None
    except ImportError:
        found = False
    if not found:
        missing.append(NO_LIBRARY)
    if os.geteuid() != 0:
        missing.append("emulating a Raspberry Pi needs root (to mount in a private namespace)")
    if shutil.which("unshare") is None:
        missing.append("emulating a Raspberry Pi needs unshare (util-linux), which is not installed")
    return "; ".join(missing) or None


class EmulatedPi:
    """
    The files of one emulated Pi, in C{directory} (which must exist and be empty,
    and whose path must contain no comma or colon, as overlay options cannot).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cpuinfo = directory / "cpuinfo"
        self.gpiomem = directory / "gpiomem"
        self._upper = directory / "dev-upper"
        self._work = directory / "dev-work"
        self.cpuinfo.write_text(CPUINFO)
        self.gpiomem.write_bytes(bytes(GPIOMEM_SIZE))
        self._upper.mkdir()
        self._work.mkdir()

    def command(self, argv: Sequence[str]) -> list[str]:
        """C{argv} wrapped to run inside the emulated Pi's mount namespace."""
        script = _NAMESPACE_SETUP.format(
            cpuinfo=shlex.quote(str(self.cpuinfo)),
            upper=shlex.quote(str(self._upper)),
            work=shlex.quote(str(self._work)),
            gpiomem=shlex.quote(str(self.gpiomem)),
        )
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def probe(self) -> str | None:
        """
        Set the namespace up once, running nothing in it: C{None} if that works,
        else why not (no permission to unshare, no overlay support, ...).
        """
        try:
            result = subprocess.run(
                self.command(["true"]),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"cannot emulate a Raspberry Pi here: {e}"
        if result.returncode != 0:
            output = " ".join((result.stdout + result.stderr).split())
            return f"cannot emulate a Raspberry Pi here: {output or result.returncode}"
        return None

    def register(self, offset: int) -> int:
        """The little-endian word at C{offset} of the GPIO registers."""
        with open(self.gpiomem, "rb") as registers:
            registers.seek(offset)
            return struct.unpack("<I", registers.read(4))[0]

    def clear_register(self, offset: int) -> None:
        """Zero the word at C{offset}, to see what the library writes there next."""
        with open(self.gpiomem, "r+b") as registers:
            registers.seek(offset)
            registers.write(bytes(4))

    def function(self, bcm: int) -> int:
        """BCM C{bcm}'s function select bits: L{INPUT}, L{OUTPUT}, or an alternative function."""
        word = self.register(GPFSEL0 + 4 * (bcm // 10))
        return (word >> (3 * (bcm % 10))) & 0b111

    def set_levels(self, high: Iterable[int]) -> None:
        """Make the BCM channels in C{high} read high, and every other one low."""
        word = 0
        for bcm in high:
            word |= 1 << bcm
        with open(self.gpiomem, "r+b") as registers:
            registers.seek(GPLEV0)
            registers.write(struct.pack("<I", word))
