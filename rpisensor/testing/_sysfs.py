"""
A fake sysfs tree for measurement sensors, to point C{--sysfs-root} (or
L{parse_sensor}'s C{sysfs_root}) at: DS18B20s on 1-wire, IIO channels and
the CPU's thermal zone, written as the kernel's drivers write them.
"""

from __future__ import annotations

import os
from pathlib import Path


def _crc8(data: bytes) -> int:
    """The Dallas/Maxim 1-wire CRC-8 (x^8 + x^5 + x^4 + 1, reflected), as the DS18B20 computes it."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


class FakeSysfs:
    """
    A directory laid out as the parts of C{/sys} the sensors read.

        sys = FakeSysfs(tmp_path / "sys")
        sys.ds18b20("28-0316a2795aff", 22.5625)
        spec = parse_sensor("room=w1:28-0316a2795aff", sysfs_root=sys.root)
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, text: str) -> Path:
        """Write C{text} to C{relative} under the root (its directories made); return the path."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def ds18b20(self, device: str, celsius: float, crc_ok: bool = True) -> Path:
        """
        A DS18B20's C{w1_slave} as the kernel's w1_therm driver writes it: the
        scratchpad bytes with their CRC check (C{NO} when C{crc_ok} is false,
        as after a bad contact), then the temperature in milli-°C. The value
        is rounded to the sensor's 1/16 °C steps; 85.0 is its power-on value.
        """
        raw = round(celsius * 16) & 0xFFFF
        scratchpad = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
        crc = _crc8(scratchpad)
        hexed = " ".join(f"{b:02x}" for b in (*scratchpad, crc))
        signed = raw - 0x10000 if raw & 0x8000 else raw
        millidegrees = int(signed * 1000 / 16)
        verdict = "YES" if crc_ok else "NO"
        return self.write(
            f"bus/w1/devices/{device}/w1_slave",
            f"{hexed} : crc={crc:02x} {verdict}\n{hexed} t={millidegrees}\n",
        )

    def iio(self, device: int, channel: str, text: str, name: str | None = None) -> Path:
        """
        Channel C{channel} of C{/sys/bus/iio/devices/iio:deviceN}: C{in_CHANNEL_input}
        holds C{text} as the driver writes it (milli-°C, milli-%, kPa), and
        C{name}, if given, the driver's name (C{bme280}, C{dht11}).
        """
        directory = f"bus/iio/devices/iio:device{device}"
        if name is not None:
            self.write(f"{directory}/name", name + "\n")
        return self.write(f"{directory}/in_{channel}_input", text + "\n")

    def cpu(self, celsius: float) -> Path:
        """The first thermal zone, as C{cpu} reads it: milli-°C."""
        return self.write("class/thermal/thermal_zone0/temp", f"{round(celsius * 1000)}\n")
