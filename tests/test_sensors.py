"""
Measurement sensors through the roles, on fake sysfs trees (C{--sysfs-root}):
C{serve} answering C{read NAME} and C{list} for a DS18B20 (a good reading, a
CRC failure, the 85.0 power-on value, a missing device), an IIO device with
scale and offset, and file sensors; the journal getting each measurement
with its unit, at each interval or on change; a failing sensor logged once
and never stalling a button; a slow read (a FIFO that blocks like a
converting DS18B20) hitting its timeout in a real thread while the button
still answers; and the options of C{serve} and C{report}.

Time is a L{Clock} (a L{ThreadedClock} where a real thread reads), so every
interval and timeout happens exactly when the test says.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

from twisted.logger import formatEvent, globalLogPublisher
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.net.limits import ListenSettings
from rpisensor.roles.report.options import ReportOptions
from rpisensor.roles.serve.options import ServeOptions
from rpisensor.roles.serve.publishing import PublishingService, PublishSettings
from rpisensor.roles.serve.service import SensorServerFactory
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.measure import parse_sensor
from rpisensor.sensing.pool import open_reader
from rpisensor.sensing.reader import InputReader
from rpisensor.sensing.sample import Measurement
from rpisensor.stream.journal import Journal
from rpisensor.stream.measuring import MeasurementSampler
from rpisensor.store import SQLiteFile
from rpisensor.stream.journal_service import JournalService
from rpisensor.testing import inline_runner, stored_stream
from rpisensor.wire import v2
from tests.support import DOOR
from tests.test_measure import BAD_CRC, GOOD, POWER_ON, W1_ID, FakeSysfs
from tests.test_report_v2 import V2Harness, frames
from tests.test_serve_stream import START, Client, _Synced
from tests.test_store import reading
from tests.worker_threads import ThreadedClock

W1_SLAVE = f"bus/w1/devices/{W1_ID}/w1_slave"


def good(millidegrees: int) -> str:
    """A DS18B20's w1_slave with a good CRC and C{millidegrees}."""
    return GOOD.replace("t=22562", f"t={millidegrees}")


class LogLines:
    """The formatted log lines of one namespace prefix, while the test runs."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self._observe)
        test.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event) -> None:
        if event.get("log_namespace", "").startswith("rpisensor"):
            self.lines.append(formatEvent(event))

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class SensorServe:
    """
    C{serve} with the tutorial's button, a door and measurement sensors on a
    fake sysfs tree; a journal in a file; every read inline, on a L{Clock}.
    """

    def __init__(self, test: SynchronousTestCase, *sensors: str, files: dict[str, str] | None = None) -> None:
        self.sys = FakeSysfs(Path(test.mktemp()))
        self.sys.root.mkdir()
        for relative, text in (files or {}).items():
            self.sys.write(relative, text)
        self.clock = Clock()
        self.clock.advance(START)
        self.backend = SimulatedGPIO(clock=self.clock, edges=False)
        specs = [parse_sensor(text, self.sys.root) for text in sensors]
        self.reader = InputReader(
            self.backend, [DEFAULT_INPUT, DOOR], inline_runner, self.clock, sensors=specs, wall=self.clock.seconds
        )
        self.reader.setup()
        journal = Journal(test.mktemp() + ".sqlite", current_boot="boot-1")
        self.journal = JournalService(self.clock, journal, outbox=False, runner=inline_runner)
        self.publishing = PublishingService(
            self.clock, self.reader, self.journal, PublishSettings("pi-test"), clock_state=_Synced()
        )
        self.factory = SensorServerFactory(self.reader, ListenSettings(), publishing=self.publishing)
        self.publishing.startService()
        self.step(0)
        test.addCleanup(self.stop)

    def stop(self) -> None:
        if self.publishing.running:
            self.publishing.stopService()

    def step(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for _ in range(3):
            self.clock.advance(0)

    def ask(self, *commands: str) -> list[str]:
        client = Client(self.factory, "192.168.1.20", 50000)
        client.send(*commands)
        self.step(0)
        return client.texts()

    def measurements(self) -> list[tuple[str, float, str | None, str]]:
        """The journal's measurement entries: (sensor, value, unit, text)."""
        return [
            (e.sensor, e.value, e.unit, e.text)
            for e in self.journal.journal.after(0, 100_000)
            if isinstance(e, v2.Reading) and e.sensor not in ("button", "door")
        ]


class ReadCommandTests(SynchronousTestCase):
    def test_ds18b20_good_reading(self) -> None:
        """read temp: the value and its unit; go and read NAME of the inputs as before."""
        serve = SensorServe(self, f"temp=w1:{W1_ID}", files={W1_SLAVE: GOOD})
        self.assertEqual(serve.ask("read temp", "go", "read door"), ["22.56 °C", "Button released", "closed"])

    def test_list_shows_kind_and_unit(self) -> None:
        """list: the inputs' names, then each sensor with its kind and unit."""
        serve = SensorServe(self, f"temp=w1:{W1_ID}", "hum=iio:device0:humidityrelative", "level=file:/x,unit=")
        self.assertEqual(serve.ask("list"), ["button door temp(w1,°C) hum(iio,%) level(file)"])

    def test_crc_failure(self) -> None:
        """A failed CRC is an error reply, never a temperature; the button still answers."""
        serve = SensorServe(self, f"temp=w1:{W1_ID}", files={W1_SLAVE: BAD_CRC})
        self.assertEqual(serve.ask("read temp", "go"), [
            "error: reading failed: temp: the DS18B20's CRC check failed (a bad contact or a long cable?)",
            "Button released",
        ])  # fmt: skip

    def test_power_on_value(self) -> None:
        """85.0 °C, the power-on value, is an error naming it."""
        serve = SensorServe(self, f"temp=w1:{W1_ID}", files={W1_SLAVE: POWER_ON})
        [reply] = serve.ask("read temp")
        self.assertTrue(reply.startswith("error: reading failed: temp: the DS18B20 reports 85.0 °C, its power-on"), reply)

    def test_missing_device(self) -> None:
        """A DS18B20 that is not there: the error names the file and what to check."""
        serve = SensorServe(self, f"temp=w1:{W1_ID}")
        [reply] = serve.ask("read temp")
        self.assertIn(f"bus/w1/devices/{W1_ID}/w1_slave does not exist", reply)
        self.assertIn("dtoverlay=w1-gpio", reply)
        self.assertTrue(reply.startswith("error: reading failed: temp: "), reply)

    def test_iio_with_scale(self) -> None:
        """An IIO driver giving raw counts: (raw + offset) * scale in the channel's unit; and a processed channel."""
        serve = SensorServe(self, "t=iio:device1:temp", "hum=iio:1:humidityrelative", files={
            "bus/iio/devices/iio:device1/in_temp_raw": "1000\n",
            "bus/iio/devices/iio:device1/in_temp_scale": "10\n",
            "bus/iio/devices/iio:device1/in_temp_offset": "500\n",
            "bus/iio/devices/iio:device1/in_humidityrelative_input": "45600\n",
        })  # fmt: skip
        self.assertEqual(serve.ask("read t", "read hum"), ["15.00 °C", "45.60 %"])

    def test_iio_device_by_driver_name(self) -> None:
        """iio:bme280:pressure finds the device whose name file says bme280, whatever its number."""
        serve = SensorServe(self, "p=iio:bme280:pressure", "h=iio:dht11:humidityrelative", files={
            "bus/iio/devices/iio:device0/name": "dht11\n",
            "bus/iio/devices/iio:device0/in_humidityrelative_input": "51200\n",
            "bus/iio/devices/iio:device1/name": "bme280\n",
            "bus/iio/devices/iio:device1/in_pressure_input": "101.325\n",
        })  # fmt: skip
        self.assertEqual(serve.ask("read p", "read h", "list"), ["1013.25 hPa", "51.20 %", "button door p(iio,hPa) h(iio,%)"])

    def test_file_sensors(self) -> None:
        """A /sys file is read under the sysfs root, with its scale; cpu is the first thermal zone."""
        serve = SensorServe(
            self, "soc=file:/sys/class/thermal/thermal_zone0/temp,scale=0.001,unit=°C,decimals=1", "cpu=cpu",
            files={"class/thermal/thermal_zone0/temp": "48312\n"},
        )  # fmt: skip
        self.assertEqual(serve.ask("read soc", "read cpu"), ["48.3 °C", "48.31 °C"])

    def test_unknown_name_lists_sensors_too(self) -> None:
        serve = SensorServe(self, "cpu=cpu")
        self.assertEqual(serve.ask("read fan"), ["error: no input named 'fan'; inputs are: button, door, cpu"])

    def test_failing_sensor_logged_once(self) -> None:
        """Every request gets the error; the log has one line, and one more when the sensor reads again."""
        log = LogLines(self)
        serve = SensorServe(self, f"temp=w1:{W1_ID},interval=1", files={W1_SLAVE: BAD_CRC})
        for _ in range(5):
            serve.step(1)
        self.assertEqual(serve.ask("read temp", "read temp")[0][:len("error: reading failed")], "error: reading failed")
        [line] = log.matching("Reading sensor temp failed")
        self.assertIn("CRC check failed", line)
        self.assertEqual(serve.measurements(), [])  # an error is never a value in the stream
        serve.sys.write(W1_SLAVE, GOOD)
        serve.step(1)
        self.assertEqual(log.matching("Sensor temp reads again."), ["Sensor temp reads again."])
        self.assertEqual(serve.measurements(), [("temp", 22.562, "°C", "22.56 °C")])


class StreamTests(SynchronousTestCase):
    def test_each_interval_with_unit(self) -> None:
        """Without change=, a value each interval=, the number as value and its unit, from the start."""
        serve = SensorServe(self, f"temp=w1:{W1_ID},interval=5", files={W1_SLAVE: GOOD})
        self.assertEqual(serve.measurements(), [("temp", 22.562, "°C", "22.56 °C")])
        serve.step(4.9)
        self.assertEqual(len(serve.measurements()), 1)
        serve.step(0.1)
        serve.sys.write(W1_SLAVE, good(23000))
        serve.step(5)
        self.assertEqual(serve.measurements(), [
            ("temp", 22.562, "°C", "22.56 °C"), ("temp", 22.562, "°C", "22.56 °C"), ("temp", 23, "°C", "23.00 °C"),
        ])  # fmt: skip
        [first] = [e for e in serve.journal.journal.after(0, 100) if e.sensor == "temp"][:1]
        self.assertEqual(first.ts, v2.format_timestamp(START))

    def test_on_change(self) -> None:
        """With change=0.2, a value is published once it moved by more than 0.2 from the last one published."""
        serve = SensorServe(self, f"temp=w1:{W1_ID},interval=1,change=0.2", files={W1_SLAVE: good(22000)})
        for millidegrees in (22100, 22200, 22150, 22250, 21900):
            serve.sys.write(W1_SLAVE, good(millidegrees))
            serve.step(1)
        self.assertEqual([value for _, value, _, _ in serve.measurements()], [22, 22.25, 21.9])

    def test_subscriber_gets_value_and_unit(self) -> None:
        """A subscriber's snapshot carries the measurement as a number with its unit, then live values."""
        serve = SensorServe(self, "cpu=cpu,interval=10", files={"class/thermal/thermal_zone0/temp": "48312\n"})
        client = Client(serve.factory, "192.168.1.20", 50001)
        client.send("subscribe")
        serve.step(0)
        frames = [f for f in client.frames() if isinstance(f, v2.Reading) and f.sensor == "cpu"]
        self.assertEqual([(f.value, f.unit, f.text, f.snapshot) for f in frames], [(48.312, "°C", "48.31 °C", True)])
        serve.sys.write("class/thermal/thermal_zone0/temp", "50000\n")
        serve.step(10)
        frames = [f for f in client.frames() if isinstance(f, v2.Reading)]
        self.assertEqual([(f.sensor, f.value, f.unit, f.text) for f in frames], [("cpu", 50, "°C", "50.00 °C")])
        self.assertIn('"unit":"°C"', v2.encode(frames[0]))

    def test_restart_learns_the_last_value(self) -> None:
        """With change=, the value published before a restart is the reference after it."""
        clock = Clock()
        sys = FakeSysfs(Path(self.mktemp()))
        sys.write(W1_SLAVE, good(22000))
        spec = parse_sensor(f"temp=w1:{W1_ID},change=0.5", sys.root)
        reader = InputReader(SimulatedGPIO(clock=clock), [DEFAULT_INPUT], inline_runner, clock, sensors=[spec], wall=clock.seconds)
        journal = JournalService(clock, Journal(None), outbox=False, runner=inline_runner)
        journal.startService()
        published: list[Measurement] = []
        first = MeasurementSampler(reader, journal, clock, on_publish=published.append)
        first.start()
        clock.advance(0)
        first.stop()
        sys.write(W1_SLAVE, good(22300))
        second = MeasurementSampler(reader, journal, clock, on_publish=published.append)
        second.start()
        clock.advance(0)
        second.stop()
        self.assertEqual([m.value for m in published], [22])


class SlowSensorTests(SynchronousTestCase):
    """
    A read that blocks in a real thread, as a DS18B20 converting: its w1_slave
    is a FIFO, whose read waits until the test writes. Time is the test's.
    """

    def setUp(self) -> None:
        self.sys = FakeSysfs(Path(self.mktemp()))
        self.fifo = self.sys.root / W1_SLAVE
        self.fifo.parent.mkdir(parents=True)
        os.mkfifo(self.fifo)
        self.clock = ThreadedClock()
        spec = parse_sensor(f"temp=w1:{W1_ID},timeout=2", self.sys.root)
        self.backend = SimulatedGPIO(clock=self.clock)
        self.reader, self.pool = open_reader(self.clock, self.backend, [DEFAULT_INPUT], sensors=[spec])
        self.pool.startService()
        self._released = threading.Event()
        self.addCleanup(self.stop)

    def release(self) -> None:
        """Let the blocked read return (a conversion that ended)."""
        if self._released.is_set():
            return
        self._released.set()
        end = None

        def opened() -> bool:
            # The read holds the FIFO open, once its thread got there: on a loaded machine
            # it may not have yet, so wait for it while a read is in flight (with none, there
            # is nothing to release).
            nonlocal end
            try:
                end = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:  # (ENXIO: no reader yet)
                    return True
            return end is not None or self.reader.jobs_in_flight == 0

        self.clock.pump_until(opened)
        if end is not None:
            os.write(end, good(21000).encode())
            os.close(end)

    def stop(self) -> None:
        self.release()
        self.clock.pump_until(lambda: self.reader.jobs_in_flight == 0)
        if self.pool.running:
            stopped = self.pool.stopService()
            self.clock.pump_until(lambda: stopped.called)
        if self.pool.sensor_pool.started:
            self.pool.sensor_pool.stop()

    def hang(self, client: Client) -> None:
        """C{read temp} from C{client}, until its read has begun (its timeout runs)."""
        began = self.reader.reads
        client.send("read temp")
        self.clock.pump_until(lambda: self.reader.reads > began)

    def test_slow_read_times_out_while_the_button_answers(self) -> None:
        reader, clock = self.reader, self.clock
        factory = SensorServerFactory(reader, ListenSettings())
        client = Client(factory, "192.168.1.20", 50002)
        self.hang(client)
        client.send("go", "ping")
        clock.pump_until(lambda: reader.reads >= 2)  # the go's read began too
        clock.advance(1.9)
        self.assertEqual(client.texts(), [])  # replies keep their order: go waits behind read temp
        button = Client(factory, "192.168.1.21", 50003)
        button.send("go")
        clock.pump_until(lambda: button.transport.value())
        self.assertEqual(button.texts(), ["Button released"])  # never stalled by the sensor
        clock.advance(0.1)
        self.assertEqual(client.texts(), ["error: reading failed: reading temp took more than 2 s", "Button released", "pong"])
        self.assertEqual(list(reader.stuck), ["temp"])
        client.send("read temp")
        [stuck] = client.texts()
        self.assertTrue(stuck.startswith("error: reading failed: sensor temp is not answering"), stuck)
        self.release()
        clock.pump_until(lambda: not reader.stuck)
        self.fifo.unlink()
        self.sys.write(W1_SLAVE, good(21000))  # the next conversion is quick
        client.send("read temp")
        clock.pump_until(lambda: client.transport.value())
        self.assertEqual(client.texts(), ["21.00 °C"])

    def test_stopping_with_a_stuck_sensor_releases_the_pins(self) -> None:
        """A sensor stuck in its own thread does not keep the pins from being released on stop."""
        log = LogLines(self)
        self.hang(Client(SensorServerFactory(self.reader, ListenSettings()), "192.168.1.20", 50004))
        self.clock.advance(2)
        self.assertEqual(list(self.reader.stuck), ["temp"])
        stopped = self.pool.stopService()
        self.clock.pump_until(lambda: stopped.called)
        self.assertEqual(self.backend.set_up_channels, frozenset())
        self.assertEqual(len(log.matching("Not waiting for the stuck read of sensor temp")), 1)
        self.assertEqual(log.matching("Released the GPIO channels"), ["Released the GPIO channels this process set up."])


class OptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)

    def test_serve_and_report_take_sensors(self) -> None:
        """--sensor (repeatable) and --sysfs-root, on both roles that read."""
        for options, extra in ((ServeOptions(), []), (ReportOptions(), ["--connect", "tcp:host=pc:port=22000"])):
            options.parseOptions([
                *extra, "--sysfs-root", self.root, "--sensor", f"room=w1:{W1_ID},interval=30,change=0.2",
                "--sensor", "cpu=cpu,timeout=1",
            ])  # fmt: skip
            room, cpu = options["sensors"]
            self.assertEqual((room.name, room.kind, room.interval, room.change, room.unit), ("room", "w1", 30, 0.2, "°C"))
            self.assertEqual(room.path(), Path(self.root) / W1_SLAVE)
            self.assertEqual((cpu.timeout, room.timeout), (1, 3))

    def test_default_none(self) -> None:
        options = ServeOptions()
        options.parseOptions([])
        self.assertEqual((options["sensors"], options["sysfs-root"]), ([], Path("/sys")))

    def test_errors(self) -> None:
        """Each mistake is a usage error naming the option."""
        for args, wanted in [
            (["--sensor", "button=cpu"], "--sensor: name 'button' is given more than once"),
            (["--sensor", "a=cpu", "--sensor", "a=cpu"], "--sensor: name 'a' is given more than once"),
            (["--sensor", "a=gps"], "--sensor a=gps: sensor 'a': kind must be one of"),
            (["--sensor", "a=cpu,timeout=61"], "timeout= must be at most 60"),
            (["--sensor", "a=cpu,timeout=0"], "timeout= must be at least 0.1"),
            (["--sensor", "a=cpu,change=nan"], "change= must be a finite number"),
            (["--sensor", "a=file:/x,unit=deg C"], "unit= must be 1 to 16 characters without spaces"),
            (["--sensor", "a=cpu", "--sysfs-root", "/no/such/dir"], "--sysfs-root /no/such/dir: no such directory"),
            (["--sensor", "a=w1:../../etc"], "a 1-wire id is its family and serial number"),
            (["--sensor", "a=iio:../x:temp"], "the IIO device must be iio:deviceN"),
            (["--sensor", "a=iio:device0:../temp"], "the IIO channel must be a name"),
        ]:
            with self.subTest(args=args):
                error = self.assertRaises(usage.UsageError, ServeOptions().parseOptions, args)
                self.assertIn(wanted, str(error))


class StoreTests(SynchronousTestCase):
    def test_store_without_a_unit_column_gets_one(self) -> None:
        """An SQLite store whose readings table has no unit column gets it when opened; its rows stay."""
        path = self.mktemp() + ".sqlite"
        with closing(sqlite3.connect(path)) as db, db:
            db.execute(
                "CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL,"
                " peer TEXT NOT NULL, message TEXT NOT NULL, device TEXT, stream TEXT, seq INTEGER, ts TEXT,"
                " synced INTEGER, sensor TEXT, value NUMERIC, text TEXT, received TEXT, identity TEXT)"
            )
            db.execute(
                "INSERT INTO readings (time, peer, message, device, stream, seq, ts, synced, sensor, value, text,"
                " received) VALUES ('t', 'p', 'Button pressed', 'pi-kitchen', '8f3a1c2e9b7d4a60', 1,"
                " '2026-12-01T19:33:25.123Z', 1, 'button', 1, 'Button pressed', 't')"
            )
        file = SQLiteFile(path)
        file.open()
        self.addCleanup(file.close)
        file.write([reading(2, sensor="temp", value=22.562, unit="°C", text="22.56 °C")])
        self.assertEqual(
            [(r.seq, r.sensor, r.value, r.unit, r.text) for r in stored_stream(path)],
            [(1, "button", 1, None, "Button pressed"), (2, "temp", 22.562, "°C", "22.56 °C")],
        )


class SensorReportHarness(V2Harness):
    """The v2 reporter's harness (outbox, fake collector, Clock) with measurement sensors too."""

    def __init__(self, test: SynchronousTestCase, sensors: list[str], **options) -> None:
        self.sys = FakeSysfs(Path(test.mktemp()))
        self.sys.root.mkdir()
        self.sys.write(W1_SLAVE, GOOD)
        self._sensors = [parse_sensor(text, self.sys.root) for text in sensors]
        super().__init__(test, **options)

    def open_outbox(self) -> None:
        if not self.reader.sensors:
            self.reader = InputReader(
                self.backend, list(self.reader.inputs.values()), inline_runner, self.clock, sensors=self._sensors, wall=self.clock.seconds
            )
            self.reader.setup()
        super().open_outbox()


class ReportTests(SynchronousTestCase):
    def test_v2_reading_has_the_unit(self) -> None:
        """report to a v2 collector: the measurement's number as value, with its unit; the button without one."""
        harness = SensorReportHarness(self, [f"temp=w1:{W1_ID},interval=5"])
        harness.start()
        link = harness.connect()
        link.pump()
        stored = [(r.sensor, r.value, r.unit, r.text) for r in harness.collector.store.readings()]
        self.assertEqual(stored, [("button", 0, None, "Button released"), ("temp", 22.562, "°C", "22.56 °C")])
        self.assertIn('"sensor":"temp","value":22.562,"text":"22.56 °C","unit":"°C"', link.up_bytes.decode())

    def test_v1_sends_the_text_on_change(self) -> None:
        """report --protocol 1: a measurement's text as DataClient3 would send it, when change= says so."""
        harness = SensorReportHarness(self, [f"temp=w1:{W1_ID},interval=5,change=0.5"], protocol="1")
        harness.start()
        protocol = harness.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        harness.clock.advance(0)
        self.assertEqual(sorted(frames(transport)), ["22.56 °C", "Button released"])
        harness.sys.write(W1_SLAVE, good(22900))  # moved 0.338: not more than 0.5
        harness.tick(5)
        harness.sys.write(W1_SLAVE, good(23100))  # moved 0.538
        harness.tick(5)
        self.assertEqual([f for f in frames(transport) if "°C" in f], ["23.10 °C"])
