"""
Measurement sensors: numbers the kernel exposes in sysfs files. A DS18B20 on
1-wire (C{w1}), kernel IIO drivers such as the DHT11/22 and BME280 (C{iio}),
any number in a file (C{file}), and the CPU's temperature (C{cpu}).

Reading a file here blocks (a DS18B20 conversion takes up to 750 ms, a DHT22
up to 2 s): L{MeasurementSpec.measure} runs in the read pool, never on the
reactor. Paths under C{/sys} are taken from C{sysfs_root} instead, so tests
and demos can point at a fake tree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rpisensor.hw.interfaces import SensorReadError

KINDS = ("w1", "iio", "file", "cpu")

#: The DS18B20 reports exactly this at power-on, before its first conversion.
DS18B20_POWER_ON = 85.0

#: Seconds a read may take by default: a DS18B20 converts in up to 750 ms at 12 bits, and
#: the kernel reads the sensors of one 1-wire bus one after the other, so a few on one
#: bus take a few of those; a DHT22 through IIO retries for up to about 2 s.
DEFAULT_TIMEOUT = 3.0
#: The longest timeout= allowed: a read thread is held that long by a hung sensor.
MAX_TIMEOUT = 60.0
#: The longest interval= allowed: a day.
MAX_INTERVAL = 86400.0
#: The most decimals= a text may show.
MAX_DECIMALS = 6

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_UNIT = re.compile(r"[^\s\0,()]{1,16}\Z")

#: IIO channels: the file stem, its unit, and the factor from the kernel's unit to ours
#: (the IIO ABI: temperature in milli °C, humidity in milli %, pressure in kPa).
_IIO_CHANNELS = {
    "temp": ("°C", 0.001),
    "humidityrelative": ("%", 0.001),
    "pressure": ("hPa", 10.0),
}


@dataclass(frozen=True)
class MeasurementSpec:
    """
    One named measurement sensor.

    @ivar source: what to read, by kind: the 1-wire id (C{28-0316a2795aff}),
        C{DEVICE:CHANNEL} for IIO (C{iio:device0:temp}: the directory under
        C{/sys/bus/iio/devices}, or the driver's name in its C{name} file,
        C{bme280:pressure}, which does not depend on the order the drivers
        were loaded in; and the channel), a path for C{file}.
    @ivar interval: seconds between measurements.
    @ivar change: a new reading is published when the value moved by more
        than this since the last one published, or at each interval when 0.
    @ivar scale: for C{file}: the factor from the file's number to the value.
    @ivar decimals: digits after the point in the text.
    @ivar timeout: seconds a read may take, from when a read thread begins
        it, before its requests get an error and the sensor counts as hung.
    """

    name: str
    kind: str
    source: str = ""
    interval: float = 10.0
    unit: str = ""
    change: float = 0.0
    scale: float = 1.0
    decimals: int = 2
    timeout: float = DEFAULT_TIMEOUT
    sysfs_root: Path = field(default=Path("/sys"), compare=False)

    def text_for(self, value: float) -> str:
        """The reading as text, e.g. C{22.56 °C}."""
        text = f"{value:.{self.decimals}f}"
        return f"{text} {self.unit}" if self.unit else text

    def describe(self) -> str:
        """Its source in words, for the start-up line: C{"room (w1:28-0316a2795aff, °C, every 10 s)"}."""
        unit = f", {self.unit}" if self.unit else ""
        return f"{self.name} ({self.kind}{':' + self.source if self.source else ''}{unit}, every {self.interval:g} s)"

    def path(self) -> Path:
        """The file this sensor reads, under the sysfs root where it is under /sys."""
        if self.kind == "w1":
            device = self.sysfs_root / "bus/w1/devices" / self.source
            newer = device / "temperature"
            return newer if newer.exists() else device / "w1_slave"
        if self.kind == "iio":
            device, _, channel = self.source.rpartition(":")
            directory = self._iio_directory(device)
            processed = directory / f"in_{channel}_input"
            return processed if processed.exists() or not (directory / f"in_{channel}_raw").exists() \
                else directory / f"in_{channel}_raw"
        if self.kind == "cpu":
            return self.sysfs_root / "class/thermal/thermal_zone0/temp"
        path = Path(self.source)
        if path.is_absolute() and path.parts[1:2] == ("sys",):
            return self.sysfs_root.joinpath(*path.parts[2:])
        return path

    def _iio_directory(self, device: str) -> Path:
        devices = self.sysfs_root / "bus/iio/devices"
        if device.startswith("iio:device"):
            return devices / device
        try:  # a driver's name: the device whose name file says it
            for directory in sorted(devices.iterdir()):
                try:
                    if (directory / "name").read_text().strip() == device:
                        return directory
                except OSError:
                    continue
        except OSError:
            pass
        return devices / f"{device} (no IIO device has this name)"

    def measure(self) -> float:
        """
        Read the sensor once; blocks. Runs in the read pool.

        @raise SensorReadError: the file is missing or unreadable, or what it
            holds is not a valid reading; the message says which.
        """
        path = self.path()
        try:
            text = _read(self.name, path)
        except SensorReadError:
            raise
        except FileNotFoundError:
            raise SensorReadError(f"{self.name}: {path} does not exist ({self._missing_hint()})") from None
        except OSError as e:
            raise SensorReadError(f"{self.name}: cannot read {path}: {e.strerror or e}") from None
        if self.kind == "w1":
            return _ds18b20(self.name, path, text)
        if self.kind == "iio":
            return self._iio(path, text)
        value = _number(self.name, path, text)
        return value * (0.001 if self.kind == "cpu" else self.scale)

    def _iio(self, path: Path, text: str) -> float:
        # The IIO ABI: in_X_input is already in the channel's unit; in_X_raw
        # needs (raw + in_X_offset) * in_X_scale to get there.
        value = _number(self.name, path, text)
        if path.name.endswith("_raw"):
            stem = path.name[: -len("_raw")]
            offset = self._optional(path.with_name(stem + "_offset"), 0.0)
            value = (value + offset) * self._optional(path.with_name(stem + "_scale"), 1.0)
        channel = self.source.rpartition(":")[2]
        return value * _IIO_CHANNELS.get(channel, ("", 1.0))[1]

    def _optional(self, path: Path, default: float) -> float:
        try:
            return _number(self.name, path, _read(self.name, path))
        except SensorReadError:
            raise
        except FileNotFoundError:
            return default
        except OSError as e:
            raise SensorReadError(f"{self.name}: cannot read {path}: {e.strerror or e}") from None

    def _missing_hint(self) -> str:
        if self.kind == "w1":
            return "is the DS18B20 wired, and dtoverlay=w1-gpio in /boot/firmware/config.txt?"
        if self.kind == "iio":
            return "is the driver loaded (dtoverlay=dht11 or dtoverlay=i2c-sensor,bme280)?"
        return "check the path"


#: The most of a sensor's file that is read: its value is a few bytes (a DS18B20's w1_slave, 75).
MAX_FILE_CHARACTERS = 4096


def _read(name: str, path: Path) -> str:
    """
    The text of a sensor's file, at most L{MAX_FILE_CHARACTERS}.

    @raise SensorReadError: it is longer: no sensor's value.
    @raise OSError: it cannot be read.
    """
    with open(path, errors="replace") as f:
        text = f.read(MAX_FILE_CHARACTERS + 1)
    if len(text) > MAX_FILE_CHARACTERS:
        raise SensorReadError(
            f"{name}: {path} holds more than {MAX_FILE_CHARACTERS} characters, starting "
            f"{text.strip()[:40]!r}: not a sensor's value; check the path"
        )
    return text


def _quoted(text: str, limit: int = 40) -> str:
    """C{text} for an error message, cut to C{limit} characters: the message, and the reply carrying it, stay short."""
    text = text.strip()
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _number(name: str, path: Path, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SensorReadError(f"{name}: {path} holds {_quoted(text)}, not a number") from None
    if not math.isfinite(value):
        raise SensorReadError(f"{name}: {path} holds {_quoted(text)}, not a finite number")
    return value


_W1_CRC = re.compile(r"crc=[0-9a-f]{2} (YES|NO)")
_W1_TEMP = re.compile(r"t=(-?\d+)")


def _ds18b20(name: str, path: Path, text: str) -> float:
    """A DS18B20's reading from its C{w1_slave} (two lines, CRC check) or C{temperature} file."""
    if path.name == "temperature":
        value = _number(name, path, text) / 1000
    else:
        crc = _W1_CRC.search(text)
        if crc is None or crc.group(1) != "YES":
            raise SensorReadError(f"{name}: the DS18B20's CRC check failed (a bad contact or a long cable?)")
        temp = _W1_TEMP.search(text)
        if temp is None:
            raise SensorReadError(f"{name}: no t= in {path}")
        value = int(temp.group(1)) / 1000
    if value == DS18B20_POWER_ON:
        raise SensorReadError(
            f"{name}: the DS18B20 reports 85.0 °C, its power-on value: it has not converted yet "
            "(check its power supply)"
        )
    return value


def parse_sensor(value: str, sysfs_root: Path = Path("/sys")) -> MeasurementSpec:
    """
    Parse C{NAME=KIND[:ARGS][,interval=S][,unit=U][,change=DELTA][,timeout=S][,scale=F][,decimals=N]}:
    C{room=w1:28-0316a2795aff}, C{hum=iio:device0:humidityrelative},
    C{cpu=cpu}, C{soc=file:/sys/class/thermal/thermal_zone0/temp,scale=0.001,unit=°C}.

    @raise ValueError: with what is wrong and what is allowed.
    """
    name, sep, rest = value.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"expected NAME=KIND:ARGS, e.g. room=w1:28-0316a2795aff, got {value!r}")
    if not _NAME.match(name):
        raise ValueError(f"sensor name {name[:70]!r} must be 1 to 64 ASCII letters, digits or '_', not starting with a digit")
    kind_and_source, *settings = rest.split(",")
    kind, _, source = kind_and_source.strip().partition(":")
    if kind not in KINDS:
        raise ValueError(f"sensor {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind in ("w1", "file") and not source:
        raise ValueError(f"sensor {name!r}: {kind} needs what to read, e.g. {kind}:{_EXAMPLES[kind]}")
    if kind == "w1" and not re.fullmatch(r"[0-9a-f]{2}-[0-9a-f]{12}", source):
        raise ValueError(
            f"sensor {name!r}: a 1-wire id is its family and serial number as in /sys/bus/w1/devices, "
            f"e.g. 28-0316a2795aff; got {source[:40]!r}"
        )
    unit = {"w1": "°C", "cpu": "°C"}.get(kind, "")
    if kind == "iio":
        device, _, channel = source.rpartition(":")
        if not device or not channel:
            raise ValueError(f"sensor {name!r}: iio needs DEVICE:CHANNEL, e.g. iio:device0:temp or iio:bme280:pressure")
        if not re.fullmatch(r"[a-z0-9_]{1,40}", channel):
            raise ValueError(f"sensor {name!r}: the IIO channel must be a name such as temp or pressure, got {channel[:40]!r}")
        if device.isdigit():
            device = f"device{device}"
        if re.fullmatch(r"device\d+", device):
            device = f"iio:{device}"  # the kernel's directory name: iio:device0
        elif not re.fullmatch(r"iio:device\d+|[A-Za-z0-9_-]{1,32}", device):
            raise ValueError(
                f"sensor {name!r}: the IIO device must be iio:deviceN, deviceN, N or a driver's name "
                f"such as bme280, got {device[:40]!r}"
            )
        unit = _IIO_CHANNELS.get(channel, ("", 1.0))[0]
        source = f"{device}:{channel}"
    fields: dict[str, str] = {}
    for setting in settings:
        key, sep, setting_value = setting.partition("=")
        key = key.strip()
        if not sep or key not in _SETTINGS:
            raise ValueError(
                f"sensor {name!r}: unknown setting {setting!r}; use interval=, unit=, change=, timeout=, "
                "scale= or decimals="
            )
        fields[key] = setting_value.strip()
    numbers = {}
    for key, low, high in (
        ("interval", 0.1, MAX_INTERVAL), ("change", 0.0, None), ("timeout", 0.1, MAX_TIMEOUT), ("scale", None, None),
    ):  # fmt: skip
        if key in fields:
            try:
                numbers[key] = float(fields[key])
            except ValueError:
                raise ValueError(f"sensor {name!r}: {key}= must be a number, got {fields[key]!r}") from None
            if not math.isfinite(numbers[key]):
                raise ValueError(f"sensor {name!r}: {key}= must be a finite number")
            if low is not None and numbers[key] < low:
                raise ValueError(f"sensor {name!r}: {key}= must be at least {low:g}")
            if high is not None and numbers[key] > high:
                raise ValueError(f"sensor {name!r}: {key}= must be at most {high:g}")
    if "decimals" in fields and (not fields["decimals"].isdigit() or int(fields["decimals"]) > MAX_DECIMALS):
        raise ValueError(f"sensor {name!r}: decimals= must be a whole number from 0 to {MAX_DECIMALS}")
    if "scale" in fields and kind != "file":
        raise ValueError(f"sensor {name!r}: scale= is only for file sensors")
    if "unit" in fields and fields["unit"] and not _UNIT.match(fields["unit"]):
        raise ValueError(
            f"sensor {name!r}: unit= must be 1 to 16 characters without spaces, commas or brackets, "
            f"got {fields['unit'][:20]!r}"
        )
    return MeasurementSpec(
        name, kind, source,
        interval=numbers.get("interval", 10.0),
        unit=fields.get("unit", unit),
        change=numbers.get("change", 0.0),
        scale=numbers.get("scale", 1.0),
        decimals=int(fields.get("decimals", 2)),
        timeout=numbers.get("timeout", DEFAULT_TIMEOUT),
        sysfs_root=sysfs_root,
    )  # fmt: skip


_SETTINGS = ("interval", "unit", "change", "timeout", "scale", "decimals")
_EXAMPLES = {"w1": "28-0316a2795aff", "file": "/sys/class/thermal/thermal_zone0/temp"}
