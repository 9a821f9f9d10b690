"""
Tests for L{rpisensor.hw.select}: choosing a backend by name.
"""

import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rpisensor.hw import rpi
from rpisensor.hw.interfaces import GPIOUnavailable, IGPIOBackend
from rpisensor.hw.select import BACKEND_NAMES, BackendChoice, choose_backend, open_backend, open_chosen
from rpisensor.hw.simulated import SimulatedGPIO

PC_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"


class SelectTestCase(SynchronousTestCase):
    """Helpers: pretend to be a PC, or a Pi with a stand-in RPi.GPIO."""

    def pretend_pc(self) -> None:
        """Make L{rpi.check_available} read a PC's cpuinfo and no device-tree model."""
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        cpuinfo = directory / "cpuinfo"
        cpuinfo.write_text(PC_CPUINFO)
        self.patch(rpi, "CPUINFO", cpuinfo)
        self.patch(rpi, "DEVICE_TREE_MODEL", directory / "missing-model")

    def pretend_pi(self) -> list:
        """Make real GPIO look available, with a stand-in RPi.GPIO; return its setmode calls."""
        modes: list = []
        gpio = SimpleNamespace(
            BOARD="BOARD", BCM="BCM", setwarnings=lambda flag: None, setmode=modes.append
        )
        package = ModuleType("RPi")
        package.__path__ = []
        package.GPIO = gpio
        for name, module in (("RPi", package), ("RPi.GPIO", gpio)):
            self.addCleanup(_restore_module, name, sys.modules.get(name))
            sys.modules[name] = module
        self.patch(rpi, "check_available", lambda: None)
        return modes

    def capture_log(self) -> EventLoggingObserver:
        """An observer of every event logged from now to the end of the test."""
        return EventLoggingObserver.createWithCleanup(self, globalLogPublisher)


def _restore_module(name: str, module) -> None:
    if module is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = module


def _gpio_events(observer: EventLoggingObserver) -> list[dict]:
    return [event for event in observer if event.get("log_namespace") == "rpisensor.hw"]


class NamesTests(SynchronousTestCase):
    """The backend names."""

    def test_names(self) -> None:
        """The names are auto, gpiod, rpi and sim, in that order."""
        self.assertEqual(BACKEND_NAMES, ("auto", "gpiod", "rpi", "sim"))

    def test_bogus(self) -> None:
        """An unknown name raises ValueError listing the names."""
        error = self.assertRaises(ValueError, open_backend, "bogus")
        self.assertEqual(str(error), "unknown GPIO backend 'bogus'; use one of auto, gpiod, rpi, sim")


class AutoTests(SelectTestCase):
    """auto: real pins on a Pi, simulated pins with a warning elsewhere."""

    def test_pc_gives_simulated(self) -> None:
        """On a PC, auto gives the simulated backend with the numbering asked for."""
        self.pretend_pc()
        backend = open_backend("auto", "bcm")
        self.assertIsInstance(backend, SimulatedGPIO)
        self.assertTrue(verifyObject(IGPIOBackend, backend))
        self.assertEqual(backend.numbering, "bcm")

    def test_pc_warns(self) -> None:
        """On a PC, auto logs one warning saying the pins are simulated, and why."""
        self.pretend_pc()
        observer = self.capture_log()
        open_backend("auto")
        events = _gpio_events(observer)
        self.assertEqual(len(events), 1)
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertIn("not a Raspberry Pi", event["why"])
        self.assertTrue(formatEvent(event).startswith("Using SIMULATED pins"), formatEvent(event))

    def test_pc_passes_sim_options(self) -> None:
        """On a PC, auto passes latency and fail_every on to the simulated pins."""
        self.pretend_pc()
        backend = open_backend("auto", latency=0.25, fail_every=7)
        self.assertEqual((backend.latency, backend.fail_every), (0.25, 7))

    def test_pi_gives_rpi(self) -> None:
        """On a Pi, auto gives the RPi.GPIO backend, in the numbering asked for, silently."""
        modes = self.pretend_pi()
        observer = self.capture_log()
        backend = open_backend("auto", "bcm", latency=0.25)
        self.assertIsInstance(backend, rpi.RPiGPIO)
        self.assertEqual(modes, ["BCM"])
        self.assertEqual(_gpio_events(observer), [])


class ExplicitTests(SelectTestCase):
    """rpi and sim are used as asked, without falling back."""

    def test_sim(self) -> None:
        """sim gives simulated pins without a warning, even on a Pi."""
        self.pretend_pi()
        observer = self.capture_log()
        backend = open_backend("sim", fail_every=2)
        self.assertIsInstance(backend, SimulatedGPIO)
        self.assertEqual(backend.fail_every, 2)
        self.assertEqual(_gpio_events(observer), [])

    def test_rpi_on_pc(self) -> None:
        """rpi on a PC raises GPIOUnavailable instead of falling back."""
        self.pretend_pc()
        error = self.assertRaises(GPIOUnavailable, open_backend, "rpi")
        self.assertIn("not a Raspberry Pi", str(error))


class ChoiceTests(SelectTestCase):
    """choose_backend says which pins and why, silently; open_chosen opens them."""

    def test_auto_on_pc(self) -> None:
        """On a PC, auto chooses simulated pins as a fallback, with the reason, logging nothing."""
        self.pretend_pc()
        observer = self.capture_log()
        choice = choose_backend("auto")
        self.assertEqual((choice.name, choice.fallback), ("sim", True))
        self.assertTrue(choice.why.startswith("real GPIO is not available (kernel GPIO: no GPIO character device"), choice.why)
        self.assertIn("RPi.GPIO: this machine is not a Raspberry Pi", choice.why)
        self.assertEqual(_gpio_events(observer), [])

    def test_auto_on_pi(self) -> None:
        """On a Pi, auto chooses real pins and says it found a Pi."""
        self.pretend_pi()
        choice = choose_backend("auto")
        self.assertEqual(choice.name, "rpi")
        self.assertTrue(choice.why.startswith("--gpio auto found a Raspberry Pi without kernel GPIO"), choice.why)

    def test_auto_prefers_the_kernel_device(self) -> None:
        """Where a header chip exists, auto chooses the kernel's GPIO device (gpiod), even on a Pi."""
        import rpisensor.hw.gpiod

        self.pretend_pi()
        self.patch(rpisensor.hw.gpiod, "find_header_chip", lambda: "/dev/gpiochip0")
        self.assertEqual(choose_backend("auto"),
                         BackendChoice("gpiod", "--gpio auto found the header's GPIO chip /dev/gpiochip0"))  # fmt: skip

    def test_explicit(self) -> None:
        """rpi and sim are chosen as asked, the option being the reason."""
        self.assertEqual(choose_backend("sim"), BackendChoice("sim", "--gpio sim"))
        self.assertEqual(choose_backend("rpi"), BackendChoice("rpi", "--gpio rpi"))
        self.assertRaises(ValueError, choose_backend, "bogus")

    def test_open_chosen_passes_options(self) -> None:
        """open_chosen opens simulated pins with the numbering and simulation options."""
        backend = open_chosen(BackendChoice("sim", "--gpio sim"), "bcm", latency=0.5, fail_every=3)
        self.assertIsInstance(backend, SimulatedGPIO)
        self.assertEqual((backend.numbering, backend.latency, backend.fail_every), ("bcm", 0.5, 3))
