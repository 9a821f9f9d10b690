"""
Measurement sensors on fake sysfs trees: a DS18B20 (good, CRC failure, the 85.0 power-on
value, missing, the newer temperature file), IIO channels (processed, and raw with scale and
offset), a file with a scale, the CPU's temperature, and the option's grammar.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.interfaces import SensorReadError
from rpisensor.sensing.measure import MeasurementSpec, parse_sensor

W1_ID = "28-0316a2795aff"
GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=22562\n"
BAD_CRC = "72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=22562\n"
POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"


class FakeSysfs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


class SensorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.sys = FakeSysfs(Path(self.mktemp()))
        self.sys.root.mkdir()

    def sensor(self, text: str) -> MeasurementSpec:
        return parse_sensor(text, sysfs_root=self.sys.root)


class DS18B20Tests(SensorTestCase):
    def test_good_reading(self) -> None:
        """A good conversion: 22.562 °C, shown as 22.56 °C."""
        self.sys.write(f"bus/w1/devices/{W1_ID}/w1_slave", GOOD)
        room = self.sensor(f"room=w1:{W1_ID}")
        self.assertEqual(room.measure(), 22.562)
        self.assertEqual(room.text_for(room.measure()), "22.56 °C")

    def test_crc_failure(self) -> None:
        """A failed CRC is an error, never a temperature."""
        self.sys.write(f"bus/w1/devices/{W1_ID}/w1_slave", BAD_CRC)
        error = self.assertRaises(SensorReadError, self.sensor(f"room=w1:{W1_ID}").measure)
        self.assertIn("CRC check failed", str(error))

    def test_power_on_value(self) -> None:
        """85.0 °C is the power-on value: an error, saying so."""
        self.sys.write(f"bus/w1/devices/{W1_ID}/w1_slave", POWER_ON)
        error = self.assertRaises(SensorReadError, self.sensor(f"room=w1:{W1_ID}").measure)
        self.assertIn("power-on value", str(error))

    def test_missing_device(self) -> None:
        """A sensor that is not there: the path, and what to check."""
        error = self.assertRaises(SensorReadError, self.sensor(f"room=w1:{W1_ID}").measure)
        self.assertIn(f"bus/w1/devices/{W1_ID}/w1_slave does not exist", str(error))
        self.assertIn("dtoverlay=w1-gpio", str(error))

    def test_newer_temperature_file(self) -> None:
        """Newer kernels also offer a temperature file in milli °C; it is preferred."""
        self.sys.write(f"bus/w1/devices/{W1_ID}/w1_slave", GOOD)
        self.sys.write(f"bus/w1/devices/{W1_ID}/temperature", "21937\n")
        self.assertEqual(self.sensor(f"room=w1:{W1_ID}").measure(), 21.937)


class IIOTests(SensorTestCase):
    def test_processed_channels(self) -> None:
        """A DHT22 or BME280 through IIO: temperature in °C, humidity in %, pressure in hPa."""
        self.sys.write("bus/iio/devices/iio:device0/in_temp_input", "23100\n")
        self.sys.write("bus/iio/devices/iio:device0/in_humidityrelative_input", "45600\n")
        self.sys.write("bus/iio/devices/iio:device0/in_pressure_input", "101.325\n")
        temp = self.sensor("temp=iio:device0:temp")
        hum = self.sensor("hum=iio:iio:device0:humidityrelative")
        pressure = self.sensor("pressure=iio:0:pressure")
        self.assertEqual((temp.measure(), temp.unit), (23.1, "°C"))
        self.assertEqual((hum.measure(), hum.unit), (45.6, "%"))
        self.assertAlmostEqual(pressure.measure(), 1013.25)
        self.assertEqual(pressure.unit, "hPa")

    def test_raw_with_scale_and_offset(self) -> None:
        """A driver that gives raw counts: (raw + offset) * scale, in the channel's unit."""
        self.sys.write("bus/iio/devices/iio:device1/in_temp_raw", "1000\n")
        self.sys.write("bus/iio/devices/iio:device1/in_temp_scale", "10\n")
        self.sys.write("bus/iio/devices/iio:device1/in_temp_offset", "500\n")
        self.assertEqual(self.sensor("t=iio:device1:temp").measure(), 15.0)

    def test_not_a_number(self) -> None:
        """A driver that answers garbage (a DHT timing error) is an error with what it said."""
        self.sys.write("bus/iio/devices/iio:device0/in_temp_input", "-EIO\n")
        error = self.assertRaises(SensorReadError, self.sensor("t=iio:device0:temp").measure)
        self.assertIn("not a number", str(error))


class FileTests(SensorTestCase):
    def test_cpu(self) -> None:
        """cpu is the first thermal zone, in milli °C, read from under the sysfs root."""
        self.sys.write("class/thermal/thermal_zone0/temp", "48312\n")
        cpu = self.sensor("cpu=cpu")
        self.assertAlmostEqual(cpu.measure(), 48.312)
        self.assertEqual(cpu.text_for(cpu.measure()), "48.31 °C")

    def test_file_with_scale(self) -> None:
        """Any number in a file, times its scale; a /sys path is taken from under the sysfs root."""
        self.sys.write("class/thermal/thermal_zone0/temp", "48312\n")
        soc = self.sensor("soc=file:/sys/class/thermal/thermal_zone0/temp,scale=0.001,unit=°C,decimals=1")
        self.assertAlmostEqual(soc.measure(), 48.312)
        self.assertEqual(soc.text_for(48.312), "48.3 °C")

    def test_a_huge_number_is_quoted_short(self) -> None:
        """A number too large for a float is an error whose text (and so its reply) stays short."""
        self.sys.write("big", "9" * 4000 + "\n")
        error = self.assertRaises(SensorReadError, self.sensor("big=file:/sys/big").measure)
        self.assertRegex(str(error), r"holds '9{40}'\.\.\. \(4000 characters\), not a finite number$")
        self.assertLess(len(str(error)), 200)

    def test_a_file_over_the_limit_is_not_read_whole(self) -> None:
        """A 100,000-digit number, or any file that long: not read whole, and said in a short line."""
        self.sys.write("log", "9" * 100_000)
        error = self.assertRaises(SensorReadError, self.sensor("log=file:/sys/log").measure)
        self.assertIn("holds more than 4096 characters", str(error))
        self.assertIn("not a sensor's value; check the path", str(error))
        self.assertLess(len(str(error)), 300)


class GrammarTests(SensorTestCase):
    def test_settings(self) -> None:
        """interval=, change= and unit= are read; defaults otherwise."""
        spec = self.sensor(f"room=w1:{W1_ID},interval=2,change=0.1")
        self.assertEqual((spec.kind, spec.source, spec.interval, spec.change, spec.unit), ("w1", W1_ID, 2.0, 0.1, "°C"))
        self.assertEqual(self.sensor("cpu=cpu").interval, 10.0)

    def test_errors(self) -> None:
        """Each mistake is named."""
        for text, wanted in [
            ("room", "expected NAME=KIND:ARGS"),
            ("room=gps:x", "kind must be one of w1, iio, file, cpu"),
            ("room=w1", "w1 needs what to read"),
            ("t=iio:device0", "iio needs DEVICE:CHANNEL"),
            ("t=cpu,every=3", "unknown setting"),
            ("t=cpu,interval=fast", "interval= must be a number"),
            ("t=cpu,interval=0.01", "interval= must be at least 0.1"),
            ("t=cpu,scale=2", "scale= is only for file sensors"),
        ]:
            with self.subTest(text=text):
                self.assertIn(wanted, str(self.assertRaises(ValueError, parse_sensor, text)))

    @given(st.text(max_size=60))
    def test_fuzz(self, text) -> None:
        """Any text parses or raises ValueError, nothing else."""
        try:
            parse_sensor(text)
        except ValueError:
            pass
