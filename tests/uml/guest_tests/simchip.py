"""
The gpio-sim chips init.sh made, as a guest test sees them: each chip's device, its label,
its lines' names, and its sim directory in sysfs, through which a test drives an input's
level (the simulated pull) or reads the level an output was set to.

init.sh describes them in the JSON file C{$RPISENSOR_UML_CHIPS} and the header chip (the
one labelled like a Pi's) also in C{$RPISENSOR_UML_CHIP}, C{$RPISENSOR_UML_CHIP_LABEL},
C{$RPISENSOR_UML_SIM_DIR} and C{$RPISENSOR_UML_LINE_NAMES}.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

Line = Union[int, str]


@dataclass(frozen=True)
class SimChip:
    name: str
    label: str
    #: The GPIO character device, e.g. C{/dev/gpiochip1}.
    path: str
    #: C{/sys/devices/platform/gpio-sim.N/gpiochipM}: one C{sim_gpioK} directory per line.
    sim_dir: Path
    line_names: tuple[str, ...]

    def offset(self, line: Line) -> int:
        """A line's offset on the chip, from its offset or its name."""
        if isinstance(line, int):
            if not 0 <= line < len(self.line_names):
                raise KeyError(f"{self.label} has lines 0-{len(self.line_names) - 1}, not {line}")
            return line
        try:
            return self.line_names.index(line)
        except ValueError:
            raise KeyError(f"{self.label} has no line named {line!r}") from None

    def _sim(self, line: Line, attribute: str) -> Path:
        return self.sim_dir / f"sim_gpio{self.offset(line)}" / attribute

    def pull(self, line: Line, high: bool) -> int:
        """
        Drive an input as a pull resistor on the pin would: high or low.

        @return: C{time.monotonic_ns()} just before the write, on the clock the kernel
            stamps edge events with.
        """
        before = time.monotonic_ns()
        self._sim(line, "pull").write_text("pull-up" if high else "pull-down")
        return before

    def level(self, line: Line) -> int:
        """The line's simulated level: what an output was set to, or an input's pull."""
        return int(self._sim(line, "value").read_text())

    def pull_all_low(self) -> None:
        for offset in range(len(self.line_names)):
            self.pull(offset, False)


def load_chips(path: str | None = None) -> dict[str, SimChip]:
    """Every chip init.sh made, by name (C{"header"}, C{"other"})."""
    description = json.loads(Path(path or os.environ["RPISENSOR_UML_CHIPS"]).read_text())
    return {
        chip["name"]: SimChip(chip["name"], chip["label"], chip["path"], Path(chip["sim_dir"]), tuple(chip["line_names"]))
        for chip in description["chips"]
    }


def header_chip() -> SimChip:
    """The chip labelled like a Pi's header (C{pinctrl-bcm2711} unless the host chose another)."""
    return load_chips()["header"]
