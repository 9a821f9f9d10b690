"""
Tests for L{rpisensor.hw.rpi}: recognising a Pi, the checks before using
real GPIO, and the C{RPi.GPIO} backend, with a stand-in module and with the
real library on an emulated Pi (see L{tests.emulated_pi}).
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.util
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from rpisensor.hw import rpi
from rpisensor.hw.interfaces import (
    GPIOError,
    GPIOUnavailable,
    IGPIOBackend,
    PinError,
    PinModeError,
    SensorReadError,
)
from tests import emulated_pi
from tests.emulated_pi import EmulatedPi, unavailable_reason
from tests.v2_subscriber import RawSubscriber

# /proc/cpuinfo and /proc/device-tree/model of a few machines.
PI3_CPUINFO = "processor\t: 0\nHardware\t: BCM2835\nRevision\t: a02082\nSerial\t\t: 00000000c0ffee00\n"
PI4_CPUINFO = "processor\t: 0\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
PI4_MODEL = "Raspberry Pi 4 Model B Rev 1.4\0"
PI5_CPUINFO = "processor\t: 0\nRevision\t: c04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
PI5_MODEL = "Raspberry Pi 5 Model B Rev 1.0\0"
PC_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme\n"


def make_temp_dir(case: SynchronousTestCase) -> Path:
    """A new empty directory under the system's temp dir, removed after the test."""
    directory = Path(tempfile.mkdtemp(prefix="rpisensor-test-"))
    case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


class DescribeBoardTests(SynchronousTestCase):
    """L{rpi.describe_board} tells a Pi, and a Pi 5, from cpuinfo and the device-tree model."""

    def test_pi3(self) -> None:
        """A Pi 3's cpuinfo (Hardware BCM2835, revision a02082) is a Pi, not RP1."""
        self.assertEqual(rpi.describe_board(PI3_CPUINFO, ""), (True, False))

    def test_pi4_device_tree(self) -> None:
        """A Pi 4's device-tree model alone is enough to recognise a Pi, not RP1."""
        self.assertEqual(rpi.describe_board("", "Raspberry Pi 4 Model B Rev 1.4"), (True, False))

    def test_pi4_64bit_cpuinfo(self) -> None:
        """A 64-bit Pi 4 cpuinfo, with no Hardware line, is a Pi by its Model line."""
        self.assertEqual(rpi.describe_board(PI4_CPUINFO, ""), (True, False))

    def test_pi5_revision(self) -> None:
        """A Pi 5 is recognised as RP1 by its revision code c04170 alone."""
        cpuinfo = PI5_CPUINFO.replace("Raspberry Pi 5 Model B", "Raspberry Pi Model B")
        self.assertEqual(rpi.describe_board(cpuinfo, ""), (True, True))

    def test_pi5_model(self) -> None:
        """A Pi 5 is recognised as RP1 by its device-tree model alone."""
        self.assertEqual(
            rpi.describe_board("", "Raspberry Pi 5 Model B Rev 1.0"), (True, True)
        )

    def test_pi500_and_cm5_revisions(self) -> None:
        """The Pi 500 (d04190) and CM5 (d04180) revision codes are RP1 too."""
        for code in ("d04190", "d04180"):
            cpuinfo = f"Revision\t: {code}\nModel\t\t: Raspberry Pi\n"
            self.assertEqual(rpi.describe_board(cpuinfo, ""), (True, True), code)

    def test_old_style_revision(self) -> None:
        """An old-style revision code (a Pi 1's 000e) is a Pi, not RP1."""
        cpuinfo = "Hardware\t: BCM2708\nRevision\t: 000e\n"
        self.assertEqual(rpi.describe_board(cpuinfo, ""), (True, False))

    def test_pc(self) -> None:
        """A PC's cpuinfo, with no device-tree model, is not a Pi."""
        self.assertEqual(rpi.describe_board(PC_CPUINFO, ""), (False, False))

    def test_other_arm_board(self) -> None:
        """Another ARM board with a Revision line is not a Pi."""
        cpuinfo = "Hardware\t: Allwinner sun8i Family\nRevision\t: 0000\n"
        self.assertEqual(rpi.describe_board(cpuinfo, "Xunlong Orange Pi PC"), (False, False))


class _RefusingLoader(importlib.abc.Loader):
    """Loads RPi.GPIO as it loads off a Pi: by raising RuntimeError."""

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        raise RuntimeError("This module can only be run on a Raspberry Pi!")


class _RefusingFinder(importlib.abc.MetaPathFinder):
    """Finds RPi.GPIO, with a loader that refuses to load it."""

    def find_spec(self, name, path=None, target=None):
        if name == "RPi.GPIO":
            return importlib.util.spec_from_loader(name, _RefusingLoader())
        return None


class CheckAvailableTests(SynchronousTestCase):
    """L{rpi.check_available} says why real GPIO cannot work, or returns quietly."""

    def setUp(self) -> None:
        self.directory = make_temp_dir(self)
        self.patch(rpi, "_has_lgpio_shim", lambda: False)
        self.patch(rpi, "GPIOMEM", self.directory / "gpiomem")
        (self.directory / "gpiomem").write_bytes(b"")

    def board(self, cpuinfo: str, model: str | None = None) -> None:
        """Make the checks read these texts; no model means no device-tree file."""
        (self.directory / "cpuinfo").write_text(cpuinfo)
        self.patch(rpi, "CPUINFO", self.directory / "cpuinfo")
        self.patch(rpi, "DEVICE_TREE_MODEL", self.directory / "model")
        if model is not None:
            (self.directory / "model").write_text(model)

    def library(self, module: ModuleType | None) -> None:
        """Make C{import RPi.GPIO} give C{module}, or fail as not installed if C{None}."""
        package = ModuleType("RPi")
        package.__path__ = []
        self._replace_module("RPi", package)
        self._replace_module("RPi.GPIO", module)

    def refusing_library(self) -> None:
        """Make C{import RPi.GPIO} raise RuntimeError, as it does off a Pi."""
        self.library(None)
        sys.modules.pop("RPi.GPIO")
        finder = _RefusingFinder()
        sys.meta_path.insert(0, finder)
        self.addCleanup(sys.meta_path.remove, finder)

    def _replace_module(self, name: str, module: ModuleType | None) -> None:
        missing = object()
        original = sys.modules.get(name, missing)
        sys.modules[name] = module

        def restore() -> None:
            if original is missing:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = original

        self.addCleanup(restore)

    def assertUnavailable(self, message: str) -> None:
        error = self.assertRaises(GPIOUnavailable, rpi.check_available)
        self.assertEqual(str(error), message)

    def test_pc(self) -> None:
        """On a PC, the reason is that this is not a Pi."""
        self.board(PC_CPUINFO)
        self.assertUnavailable("this machine is not a Raspberry Pi (no BCM hardware in /proc/cpuinfo)")

    def test_pi5_without_lgpio(self) -> None:
        """On a Pi 5 without rpi-lgpio, the reason names the Pi 5 and the package to install."""
        self.board(PI5_CPUINFO, PI5_MODEL)
        self.library(ModuleType("RPi.GPIO"))
        self.assertUnavailable(
            "this is a Raspberry Pi 5, which RPi.GPIO cannot drive; "
            "install rpi-lgpio instead: pip uninstall RPi.GPIO && pip install rpi-lgpio"
        )

    def test_pi5_with_lgpio(self) -> None:
        """On a Pi 5 with rpi-lgpio providing RPi.GPIO, real GPIO is available."""
        self.board(PI5_CPUINFO, PI5_MODEL)
        self.patch(rpi, "_has_lgpio_shim", lambda: True)
        self.library(ModuleType("RPi.GPIO"))
        self.assertIsNone(rpi.check_available())

    def test_library_missing(self) -> None:
        """On a Pi without RPi.GPIO, the reason says what to pip install."""
        self.board(PI3_CPUINFO)
        self.library(None)
        self.assertUnavailable(
            "the RPi.GPIO library is not installed: pip install RPi.GPIO "
            "(on a Pi 5: pip install rpi-lgpio)"
        )

    def test_library_refuses(self) -> None:
        """When RPi.GPIO refuses to load, its own reason is passed on."""
        self.board(PI3_CPUINFO)
        self.refusing_library()
        self.assertUnavailable(
            "RPi.GPIO refused to load: This module can only be run on a Raspberry Pi!"
        )

    def test_no_gpiomem_access(self) -> None:
        """A user who cannot open /dev/gpiomem is told to join the gpio group."""
        self.board(PI4_CPUINFO, PI4_MODEL)
        self.library(ModuleType("RPi.GPIO"))
        self.patch(rpi, "GPIOMEM", self.directory / "no-gpiomem")
        self.patch(rpi.os, "geteuid", lambda: 1000)
        self.assertUnavailable(
            f"no access to {self.directory / 'no-gpiomem'}: add this user to the gpio "
            "group (sudo adduser $USER gpio), then log in again"
        )

    def test_root_without_gpiomem(self) -> None:
        """root may go on without /dev/gpiomem, since RPi.GPIO then uses /dev/mem."""
        self.board(PI4_CPUINFO, PI4_MODEL)
        self.library(ModuleType("RPi.GPIO"))
        self.patch(rpi, "GPIOMEM", self.directory / "no-gpiomem")
        self.patch(rpi.os, "geteuid", lambda: 0)
        self.assertIsNone(rpi.check_available())

    def test_pi4_available(self) -> None:
        """On a Pi 4 (NUL-terminated device-tree model) with the library, the check passes."""
        self.board("", PI4_MODEL)
        self.library(ModuleType("RPi.GPIO"))
        self.patch(rpi.os, "geteuid", lambda: 1000)
        self.assertIsNone(rpi.check_available())

    def test_error_classes(self) -> None:
        """GPIOUnavailable is both a GPIOError and a RuntimeError."""
        self.assertTrue(issubclass(GPIOUnavailable, GPIOError))
        self.assertTrue(issubclass(GPIOUnavailable, RuntimeError))


class StandInGPIO:
    """
    A stand-in for the C{RPi.GPIO} module: records the calls it gets, reads
    levels from C{levels}, and raises the exception in C{errors} for a call
    named there. Its constants are strings, so each can be told apart.
    """

    BOARD, BCM = "BOARD", "BCM"
    IN = "IN"
    PUD_UP, PUD_DOWN, PUD_OFF = "PUD_UP", "PUD_DOWN", "PUD_OFF"
    HIGH, LOW = 1, 0

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.levels: dict[int, int] = {}
        self.errors: dict[str, Exception] = {}

    def _call(self, name: str, *args) -> None:
        if name in self.errors:
            raise self.errors[name]
        self.calls.append((name, *args))

    def setwarnings(self, flag: bool) -> None:
        self._call("setwarnings", flag)

    def setmode(self, mode: str) -> None:
        self._call("setmode", mode)

    def setup(self, channel: int, direction: str, pull_up_down: str = "PUD_OFF") -> None:
        self._call("setup", channel, direction, pull_up_down)

    def input(self, channel: int) -> int:
        self._call("input", channel)
        return self.levels[channel]

    def cleanup(self, channel=None) -> None:
        # A copy, so that a list changed after the call cannot change the record.
        self._call("cleanup", copy.copy(channel))


class RPiGPIOTests(SynchronousTestCase):
    """L{rpi.RPiGPIO} drives the RPi.GPIO module it is given."""

    def setUp(self) -> None:
        self.gpio = StandInGPIO()

    def backend(self, numbering: str = "board") -> rpi.RPiGPIO:
        return rpi.RPiGPIO(numbering, gpio=self.gpio)

    def calls(self, name: str) -> list[tuple]:
        return [call for call in self.gpio.calls if call[0] == name]

    def test_provides_backend(self) -> None:
        """RPiGPIO provides every attribute and method of IGPIOBackend."""
        backend = self.backend()
        self.assertTrue(verifyObject(IGPIOBackend, backend))
        self.assertEqual((backend.name, backend.numbering), ("rpi", "board"))

    def test_board_mode(self) -> None:
        """BOARD numbering silences RPi.GPIO's warnings and selects its BOARD mode."""
        self.backend("board")
        self.assertEqual(self.gpio.calls, [("setwarnings", False), ("setmode", "BOARD")])

    def test_bcm_mode(self) -> None:
        """BCM numbering selects RPi.GPIO's BCM mode."""
        self.backend("bcm")
        self.assertEqual(self.calls("setmode"), [("setmode", "BCM")])

    def test_mode_conflict(self) -> None:
        """A mode already set otherwise by another user is reported as GPIOUnavailable."""
        self.gpio.errors["setmode"] = ValueError("A different mode has already been set!")
        error = self.assertRaises(GPIOUnavailable, self.backend, "bcm")
        self.assertEqual(
            str(error), "cannot use BCM numbering: A different mode has already been set!"
        )

    def test_pull_mapping(self) -> None:
        """Pulls up, down and off become PUD_UP, PUD_DOWN and PUD_OFF on input channels."""
        backend = self.backend()
        backend.setup_input(24, "up")
        backend.setup_input(18, "down")
        backend.setup_input(16, "off")
        self.assertEqual(
            self.calls("setup"),
            [("setup", 24, "IN", "PUD_UP"), ("setup", 18, "IN", "PUD_DOWN"),
             ("setup", 16, "IN", "PUD_OFF")],
        )  # fmt: skip

    def test_setup_channel_as_given(self) -> None:
        """The channel goes to RPi.GPIO in the backend's numbering, unconverted."""
        backend = self.backend("bcm")
        backend.setup_input(8, "up")
        self.assertEqual(self.calls("setup"), [("setup", 8, "IN", "PUD_UP")])

    def test_setup_power_pin(self) -> None:
        """A power pin is refused before RPi.GPIO is called."""
        backend = self.backend()
        self.assertRaises(PinError, backend.setup_input, 2, "up")
        self.assertEqual(self.calls("setup"), [])

    def test_setup_refused(self) -> None:
        """RPi.GPIO's RuntimeError on set-up is reported as GPIOUnavailable naming the pin."""
        self.gpio.errors["setup"] = RuntimeError("No access to /dev/mem.  Try running as root!")
        backend = self.backend()
        error = self.assertRaises(GPIOUnavailable, backend.setup_input, 24, "up")
        self.assertEqual(
            str(error), "cannot set up BOARD 24: No access to /dev/mem.  Try running as root!"
        )

    def test_read_levels(self) -> None:
        """HIGH reads as True and LOW as False."""
        backend = self.backend()
        backend.setup_input(24, "up")
        self.gpio.levels[24] = StandInGPIO.HIGH
        high = backend.read(24)
        self.gpio.levels[24] = StandInGPIO.LOW
        self.assertEqual((high, backend.read(24)), (True, False))

    def test_read_without_setup(self) -> None:
        """Reading a channel that was not set up raises PinModeError without calling RPi.GPIO."""
        backend = self.backend("bcm")
        error = self.assertRaises(PinModeError, backend.read, 8)
        self.assertEqual(str(error), "BCM 8 was not set up as an input")
        self.assertEqual(self.calls("input"), [])

    def test_read_fails(self) -> None:
        """RPi.GPIO's RuntimeError on a read becomes SensorReadError."""
        backend = self.backend()
        backend.setup_input(24, "up")
        self.gpio.errors["input"] = RuntimeError("You must setup() the GPIO channel first")
        error = self.assertRaises(SensorReadError, backend.read, 24)
        self.assertEqual(
            str(error), "reading BOARD 24 failed: You must setup() the GPIO channel first"
        )

    def test_cleanup_own_channels(self) -> None:
        """cleanup passes exactly the channels set up, once each, in set-up order."""
        backend = self.backend()
        backend.setup_input(24, "up")
        backend.setup_input(18, "down")
        backend.setup_input(24, "up")
        backend.cleanup()
        self.assertEqual(self.calls("cleanup"), [("cleanup", [24, 18])])

    def test_cleanup_nothing(self) -> None:
        """With no channel set up, cleanup never calls RPi.GPIO's cleanup, which would release all."""
        backend = self.backend()
        backend.cleanup()
        self.assertEqual(self.calls("cleanup"), [])

    def test_cleanup_once(self) -> None:
        """A second cleanup releases nothing more, and reads are refused after it."""
        backend = self.backend()
        backend.setup_input(24, "up")
        backend.cleanup()
        backend.cleanup()
        self.assertEqual(self.calls("cleanup"), [("cleanup", [24])])
        self.assertRaises(PinModeError, backend.read, 24)


def _twistd() -> str:
    """The twistd of the Python running the tests."""
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable))
    if twistd is None:
        raise SkipTest(f"no twistd next to {sys.executable}")
    return twistd


def _this_machine_is_a_pi() -> bool:
    def text(path: Path) -> str:
        try:
            return path.read_text(errors="replace").replace("\0", "")
        except OSError:
            return ""

    return rpi.describe_board(text(rpi.CPUINFO), text(rpi.DEVICE_TREE_MODEL))[0]


#: How long to wait for the server to start, answer or stop. Generous, never asserted.
PATIENCE = 30.0
LISTENING = re.compile(r"Listening on tcp:0:interface=127\.0\.0\.1 \(port (\d+)\)")


class EmulatedPiServer(SynchronousTestCase):
    """C{twistd rpisensor serve --gpio rpi} with the real RPi.GPIO on an emulated Pi 3."""

    def setUp(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise SkipTest(reason)
        self.twistd = _twistd()
        self.directory = make_temp_dir(self)
        self.pi = EmulatedPi(self.directory)
        reason = self.pi.probe()
        if reason is not None:
            raise SkipTest(reason)
        self.log = self.directory / "twistd.log"

    def start_server(self, *options: str) -> int:
        """Start the server in the emulated Pi; return the port it listens on."""
        argv = [self.twistd, "-n", "--pidfile=", "rpisensor", "serve", "--gpio", "rpi",
                "--listen", "tcp:0:interface=127.0.0.1", *options]  # fmt: skip
        with open(self.log, "wb") as log:
            self.server = subprocess.Popen(
                self.pi.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.addCleanup(self._kill_server)
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.server.poll() is not None:
                self.fail(f"the server exited with {self.server.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        self.fail(f"the server did not say where it listens:\n{self.log_text()}")

    def _kill_server(self) -> None:
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop_server(self) -> int:
        """Stop the server with SIGTERM, as systemd does; return its exit code."""
        self.server.send_signal(signal.SIGTERM)
        try:
            return self.server.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            self.fail(f"the server did not stop on SIGTERM:\n{self.log_text()}")

    def ask(self, port: int, command: bytes = b"go") -> str:
        """Send one NUL-terminated command and read the reply up to its NUL."""
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as connection:
            connection.sendall(command + b"\0")
            reply = b""
            while b"\0" not in reply:
                chunk = connection.recv(1024)
                if not chunk:
                    self.fail(f"the server closed the connection after {reply!r}")
                reply += chunk
        return reply.split(b"\0", 1)[0].decode("utf-8")


class EmulatedPiServerTests(EmulatedPiServer):
    """The server on the emulated Pi answers a plain socket client as the tutorial's DataClient1 does."""

    def assertButtonFollowsBCM8(self, port: int) -> None:
        """Pressed when only BCM 8 is low, released when only BCM 8 is high."""
        everything_but_8 = set(range(32)) - {8}
        self.pi.set_levels(high=everything_but_8)
        self.assertEqual(self.ask(port), "Button pressed")
        self.pi.set_levels(high={8})
        self.assertEqual(self.ask(port), "Button released")
        self.pi.set_levels(high=everything_but_8)
        self.assertEqual(self.ask(port), "Button pressed")

    def test_board_numbering(self) -> None:
        """In BOARD numbering, the button on pin 24 follows BCM 8's level, and SIGTERM exits 0."""
        port = self.start_server("--input", "button=24")
        self.assertButtonFollowsBCM8(port)
        self.assertEqual(self.stop_server(), 0, self.log_text())
        self.assertNotIn("Traceback", self.log_text())

    def test_bcm_numbering(self) -> None:
        """In BCM numbering, the button on BCM 8 follows its level, and SIGTERM exits 0."""
        port = self.start_server("--numbering", "bcm", "--input", "button=8")
        self.assertButtonFollowsBCM8(port)
        self.assertEqual(self.stop_server(), 0, self.log_text())
        self.assertNotIn("Traceback", self.log_text())


    def test_polled_changes_reach_the_journal_and_a_subscriber(self) -> None:
        """
        RPi.GPIO has no edges rpisensor relies on: every --poll-interval a thread of its own
        reads the input, and each change of BCM 8's level is one journal entry, streamed to a
        v2 subscriber once, in order; go answers the same level.
        """
        journal = self.directory / "journal.sqlite"
        self.pi.set_levels(high={8})  # the button released (pull-up, active low)
        port = self.start_server("--poll-interval", "0.02", "--journal", str(journal))
        subscriber = RawSubscriber(port, 0)
        self.addCleanup(subscriber.close)
        first = subscriber.next_entry()
        self.assertEqual((first["seq"], first["value"], first["text"]), (1, 0, "Button released"))
        for count in range(1, 7):
            pressed = count % 2 == 1
            self.pi.set_levels(high=set() if pressed else {8})
            entry = subscriber.next_entry()
            text = "Button pressed" if pressed else "Button released"
            self.assertEqual((entry["seq"], entry["value"], entry["text"]), (count + 1, int(pressed), text))
            self.assertEqual(self.ask(port), text)
        self.assertEqual(self.stop_server(), 0, self.log_text())
        rest = subscriber.read_to_end()
        self.assertEqual([verb for verb, _ in rest if verb == "reading"], [], rest)
        self.assertIn("Polling button every 0.02 s (--poll-interval) in one thread", self.log_text())
        received = [(e["seq"], e["sensor"], e["value"], e["text"]) for e in subscriber.entries]
        with closing(sqlite3.connect(journal)) as db:
            rows = db.execute("SELECT seq, sensor, value, text FROM entries ORDER BY seq").fetchall()
        self.assertEqual(received, rows)
        self.assertEqual([value for _, _, value, _ in rows], [0, 1, 0, 1, 0, 1, 0])


#: Polls the button (BOARD 24) with the real library, each pass when the test says "next".
POLL_IN_STEP = """
import sys, threading
from rpisensor.sensing.polling import PolledEdges
from rpisensor.hw.rpi import RPiGPIO
from rpisensor.sensing.inputs import InputSpec

stopped = threading.Event()

def wait(delay):
    print("waiting", flush=True)
    if sys.stdin.readline().strip() == "stop":
        stopped.set()
        return True
    return False

class Reactor:
    def seconds(self):
        return 0.0

    def callFromThread(self, f, *args):
        f(*args)

backend = RPiGPIO("board")
backend.setup_input(24, "up")
edges = PolledEdges(backend, [InputSpec("button", 24)], 0.001, wait=wait)
edges.watch(Reactor(), lambda change: print("change", int(change.high), flush=True))
stopped.wait()
edges.unwatch()
backend.cleanup()
"""


class EmulatedPiPollingTests(EmulatedPiServer):
    """The polling thread and the pipelined path with the real RPi.GPIO on an emulated Pi 3."""

    def test_polling_thread_sees_a_pulse_of_one_pass(self) -> None:
        """
        A pulse on BCM 8 that lasts from one pass to the next is seen, press then release, by
        the polling thread reading the real library (passes run in step with the test, so no
        timing decides it; bench/cost.py P2 times 2 ms pulses at --poll-interval 0.001).
        """
        self.pi.set_levels(high={8})
        poller = subprocess.Popen(
            self.pi.command([sys.executable, "-c", POLL_IN_STEP]), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.directory,
        )  # fmt: skip
        self.addCleanup(lambda: poller.poll() is None and (poller.kill(), poller.wait()))
        said: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [said.put(line.strip()) for line in poller.stdout], daemon=True).start()
        lines = []

        def expect(*wanted: str) -> None:
            for want in wanted:
                try:
                    lines.append(said.get(timeout=PATIENCE))
                except queue.Empty:
                    lines.append(f"(nothing; exit {poller.poll()})")
                self.assertEqual(lines[-1], want, lines)

        expect("waiting")
        self.pi.set_levels(high=set())  # pressed
        poller.stdin.write("next\n")
        poller.stdin.flush()
        expect("change 0", "waiting")
        self.pi.set_levels(high={8})  # released again, one pass later
        poller.stdin.write("next\n")
        poller.stdin.flush()
        expect("change 1", "waiting")
        poller.stdin.write("stop\n")
        poller.stdin.flush()
        self.assertEqual(poller.wait(timeout=PATIENCE), 0, lines)

    def test_pipelined_burst_answered_whole_and_in_order(self) -> None:
        """
        10,000 go, with a ping after every tenth, sent in one write to serve --gpio rpi: every one
        is answered, in the order sent (each ping's pong after the ten go before it, although a
        pong is known at once and a go waits for its read).
        """
        self.pi.set_levels(high={8})
        port = self.start_server("--journal", "none")
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as client:
            client.sendall((b"go\0" * 10 + b"ping\0") * 1000)
            data, count = bytearray(), 0
            while count < 11_000:
                block = client.recv(1 << 16)
                self.assertTrue(block, f"closed after {count} replies")
                count += block.count(b"\0")
                data += block
        replies = bytes(data).split(b"\0")[:-1]
        self.assertEqual(replies, ([b"Button released"] * 10 + [b"pong"]) * 1000)
        self.assertEqual(self.stop_server(), 0, self.log_text())


class EmulationPrerequisiteTests(SynchronousTestCase):
    """Why the emulated-Pi tests skip: each missing prerequisite, with what to do."""

    def pretend(self, library: bool, root: bool, unshare: bool) -> None:
        self.patch(emulated_pi.importlib.util, "find_spec", lambda name: object() if library else None)
        self.patch(emulated_pi.os, "geteuid", lambda: 0 if root else 1000)
        self.patch(emulated_pi.shutil, "which", lambda name: "/usr/bin/unshare" if unshare else None)

    def test_everything_there(self) -> None:
        """With the library, root and unshare, only the probe can still say no."""
        self.pretend(library=True, root=True, unshare=True)
        self.assertIsNone(unavailable_reason())

    def test_no_library(self) -> None:
        """Without RPi.GPIO, the reason says how to install it and that it needs a compiler."""
        self.pretend(library=False, root=True, unshare=True)
        self.assertEqual(
            unavailable_reason(),
            "RPi.GPIO is not installed: pip install -e '.[emulated-pi]' (needs a C compiler)",
        )

    def test_library_package_missing(self) -> None:
        """find_spec raising (no RPi package at all) counts as the library missing."""
        self.pretend(library=True, root=True, unshare=True)

        def no_package(name):
            raise ModuleNotFoundError("No module named 'RPi'")

        self.patch(emulated_pi.importlib.util, "find_spec", no_package)
        self.assertEqual(unavailable_reason(), emulated_pi.NO_LIBRARY)

    def test_every_missing_prerequisite_named(self) -> None:
        """Not root and no unshare either: every reason is given, not only the first."""
        self.pretend(library=False, root=False, unshare=False)
        reasons = unavailable_reason().split("; ")
        self.assertEqual(len(reasons), 3, reasons)
        self.assertIn("needs root", reasons[1])
        self.assertIn("needs unshare (util-linux)", reasons[2])


class NotAPiCommandTests(SynchronousTestCase):
    """C{--gpio rpi} on a machine that is not a Pi."""

    def test_one_clear_line(self) -> None:
        """twistd exits non-zero with one line saying this is not a Raspberry Pi, no traceback."""
        if _this_machine_is_a_pi():
            raise SkipTest("this machine is a Raspberry Pi")
        directory = make_temp_dir(self)
        result = subprocess.run(
            [_twistd(), "-n", "rpisensor", "serve", "--gpio", "rpi"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=directory,
            timeout=PATIENCE * 2,
        )
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        self.assertNotIn("Traceback", output)
        lines = output.splitlines()
        self.assertEqual(len(lines), 1, output)
        self.assertIn("not a Raspberry Pi", lines[0])
