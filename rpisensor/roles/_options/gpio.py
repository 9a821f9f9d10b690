"""
The options of every role that reads pins and sensors: C{serve} and C{report}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.python import usage

from rpisensor.hw import BACKEND_NAMES
from rpisensor.roles._options.base import FoldedOptions, count, non_negative_float
from rpisensor.sensing.inputs import DEFAULT_INPUT, InputSpec, default_input, parse_input
from rpisensor.sensing.measure import parse_sensor


class GPIOOptions(FoldedOptions):
    """Options of every role that reads pins: serve and report."""

    optParameters = [
        ["gpio", None, "auto",
         "GPIO backend: auto (the kernel's GPIO device if there is one, else RPi.GPIO on a Pi, "
         "else simulated pins), gpiod (the kernel's GPIO character device: every Pi, the Pi 5 "
         "included), rpi (the RPi.GPIO library) or sim. Example: --gpio sim"],
        ["numbering", None, "board",
         "Pin numbering of --input: board (header pins, as the tutorial) or bcm. "
         "Example: --numbering bcm"],
        ["sim-latency", None, "0",
         "Simulated pins only: seconds each read takes, to play a slow sensor. "
         "Example: --sim-latency 0.05"],
        ["sim-fail-every", None, "0",
         "Simulated pins only: every Nth read fails (0: never). Example: --sim-fail-every 10"],
        ["read-threads", None, "1",
         "Worker threads for blocking reads; 1 serialises GPIO access. Example: --read-threads 2"],
        ["max-age", None, "0",
         "Seconds a reading may be reused for later requests (0: every request waits "
         "for a fresh read). Example: --max-age 0.5"],
        ["read-timeout", None, "10",
         "Seconds a read may run, from when a read thread begins it (time queued behind "
         "other reads does not count), before its requests get an error; the input then "
         "counts as hung until the read returns. Example: --read-timeout 2"],
        ["sysfs-root", None, "/sys",
         "Read every --sensor path under /sys from this directory instead (a fake tree for "
         "tests and demos). Example: --sysfs-root ./demo-sys"],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self._input_texts: list[str] = []
        self._sensor_texts: list[str] = []
        self["inputs"] = [DEFAULT_INPUT]
        self["sensors"] = []
        self["sim-patterns"] = []

    def opt_sim_pattern(self, value: str) -> None:
        """
        Simulated pins only: press and release an input by itself, for demos
        (repeatable): NAME=ACTIVE_SECONDS,INACTIVE_SECONDS.
        Example: --sim-pattern button=0.5,2
        """
        from rpisensor.sensing.patterns import parse_pattern

        try:
            self["sim-patterns"].append(parse_pattern(value))
        except ValueError as e:
            raise usage.UsageError(f"--sim-pattern: {e}") from None

    def opt_input(self, value: str) -> None:
        """
        A named input NAME=PIN[,pull=up|down|off][,active=low|high][,on=TEXT][,off=TEXT]
        [,debounce=MS] (repeatable; the first answers 'go'; each on its own pin). Default:
        the tutorial's button on BOARD pin 24 (BCM 8 with --numbering bcm),
        pull=up,active=low, with its texts. debounce=MS: a new level counts once it held
        for MS milliseconds (the kernel's debounce with --gpio gpiod). Example:
        --input door=18,pull=up,active=high,debounce=20
        """
        self._input_texts.append(value)

    def opt_sensor(self, value: str) -> None:
        """
        A measurement sensor NAME=KIND:ARGS[,interval=S][,unit=U][,change=DELTA][,timeout=S]
        (repeatable): w1:28-XXXXXXXXXXXX (a DS18B20), iio:DEVICE:CHANNEL (a kernel IIO
        driver: DHT22, BME280), file:PATH[,scale=F] (any number in a file) or cpu (the
        CPU's temperature). Read every interval= seconds (10), published when it moved by
        more than change= (0: every reading); a read longer than timeout= seconds (3, at
        most 60) is an error. 'read NAME' answers e.g. '22.56 °C'. Example:
        --sensor room=w1:28-0316a2795aff,interval=30,change=0.2
        """
        self._sensor_texts.append(value)

    def postOptions(self) -> None:
        super().postOptions()
        if self["gpio"] not in BACKEND_NAMES:
            raise usage.UsageError(
                f"--gpio must be one of {', '.join(BACKEND_NAMES)}, got {self['gpio']!r}"
            )
        if self["numbering"] not in ("board", "bcm"):
            raise usage.UsageError(f"--numbering must be board or bcm, got {self['numbering']!r}")
        self["sim-latency"] = non_negative_float("sim-latency", self["sim-latency"])
        self["sim-fail-every"] = count("sim-fail-every", self["sim-fail-every"])
        self["read-threads"] = count("read-threads", self["read-threads"], minimum=1)
        self["max-age"] = non_negative_float("max-age", self["max-age"])
        self["read-timeout"] = non_negative_float("read-timeout", self["read-timeout"])
        if self["read-timeout"] <= 0:
            raise usage.UsageError("--read-timeout must be more than 0 seconds")
        if self._input_texts:
            self["inputs"] = [self._parse_input(text) for text in self._input_texts]
        else:  # the default names a physical pin, whatever the numbering
            self["inputs"] = [default_input(self["numbering"])]
        names = [spec.name for spec in self["inputs"]]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise usage.UsageError(f"--input: name {duplicates[0]!r} is given more than once")
        on_pin: dict[int, str] = {}
        for spec in self["inputs"]:
            other = on_pin.setdefault(spec.pin, spec.name)
            if other != spec.name:
                raise usage.UsageError(
                    f"--input: {other!r} and {spec.name!r} are both on "
                    f"{self['numbering'].upper()} pin {spec.pin}; give each input its own pin"
                )
        self._parse_sensors()
        names = {spec.name for spec in self["inputs"]}
        for pattern in self["sim-patterns"]:
            if pattern.name not in names:
                raise usage.UsageError(
                    f"--sim-pattern: no input named {pattern.name!r}; inputs are: {', '.join(sorted(names))}"
                )
        if self["sim-patterns"] and self["gpio"] not in ("sim", "auto"):
            raise usage.UsageError("--sim-pattern needs simulated pins (--gpio sim)")

    def _parse_sensors(self) -> None:
        root = self["sysfs-root"] = Path(self["sysfs-root"])
        if self._sensor_texts and not root.is_dir():
            raise usage.UsageError(f"--sysfs-root {root}: no such directory")
        taken = {spec.name for spec in self["inputs"]}
        for text in self._sensor_texts:
            try:
                spec = parse_sensor(text, root)
            except ValueError as e:
                raise usage.UsageError(f"--sensor {text}: {e}") from None
            if spec.name in taken:
                raise usage.UsageError(
                    f"--sensor: name {spec.name!r} is given more than once (inputs and sensors share names)"
                )
            taken.add(spec.name)
            self["sensors"].append(spec)

    def _parse_input(self, text: str) -> InputSpec:
        try:
            return parse_input(text, self["numbering"])
        except ValueError as e:
            raise usage.UsageError(f"--input {text}: {e}") from None
