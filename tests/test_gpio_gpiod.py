"""
The gpiod backend's logic on the host, with a stand-in for the gpiod module: finding the
header chip by label, and turning edge events into level changes with lost events counted.
The real kernel stack is exercised inside User-Mode Linux (tests/uml/guest_tests/).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.gpiod import KernelGPIO, find_header_chip
from rpisensor.hw.interfaces import GPIOUnavailable, PinModeError

RISING, FALLING = "rising", "falling"


class _Chip:
    labels: dict[str, str] = {}

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def get_info(self):
        return SimpleNamespace(label=self.labels[self.path])


class _Request:
    def __init__(self, offset, value):
        self.offset = offset
        self.value = value
        self.events = []
        self.fd = 99
        self.released = False
        self.log = []

    def get_value(self, offset):
        return self.value

    def read_edge_events(self):
        events, self.events = self.events, []
        return events

    def set_value(self, offset, value):
        self.value = value
        self.log.append(("set", value))

    def reconfigure_lines(self, config):
        self.log.append(("reconfigure", config[self.offset]["direction"]))

    def release(self):
        self.released = True
        self.log.append(("release",))


def fake_gpiod(labels: dict[str, str]):
    """A stand-in for the gpiod module, enough for the backend."""
    _Chip.labels = labels
    requests = {}

    def request_lines(path, consumer, config, event_buffer_size=None):
        (offset, settings), = config.items()
        requests[offset] = _Request(offset, settings.get("output_value", "INACTIVE"))
        requests[offset].settings = settings
        return requests[offset]

    return SimpleNamespace(
        is_gpiochip_device=lambda path: True,
        Chip=_Chip,
        request_lines=request_lines,
        LineSettings=lambda **settings: settings,
        EdgeEvent=SimpleNamespace(Type=SimpleNamespace(RISING_EDGE=RISING)),
        line=SimpleNamespace(
            Bias=SimpleNamespace(PULL_UP="pull-up", PULL_DOWN="pull-down", DISABLED="disabled"),
            Clock=SimpleNamespace(REALTIME="realtime"),
            Direction=SimpleNamespace(INPUT="input", OUTPUT="output"),
            Edge=SimpleNamespace(BOTH="both"),
            Value=SimpleNamespace(ACTIVE="ACTIVE", INACTIVE="INACTIVE"),
        ),
        requests=requests,
    )


def event(kind, seqno, ns=1_796_153_605_123_000_000):
    return SimpleNamespace(event_type=kind, line_seqno=seqno, timestamp_ns=ns)


class FindChipTests(SynchronousTestCase):
    def devices(self, *names) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        for name in names:
            open(os.path.join(directory, name), "w").close()
        return directory

    def test_by_label_not_by_number(self) -> None:
        """The header chip is found by its label, whatever its number (a Pi 5 since kernel 6.6: chip 0)."""
        directory = self.devices("gpiochip0", "gpiochip4", "gpiochip10")
        labels = {f"{directory}/gpiochip0": "raspberrypi-exp-gpio", f"{directory}/gpiochip4": "pinctrl-rp1",
                  f"{directory}/gpiochip10": "pinctrl-bcm2835"}  # fmt: skip
        found = find_header_chip(f"{directory}/gpiochip*", gpiod=fake_gpiod(labels))
        self.assertEqual(found, f"{directory}/gpiochip4")  # the Pi 5's label comes first

    def test_no_devices(self) -> None:
        """No character device at all: the kernel has no GPIO."""
        error = self.assertRaises(GPIOUnavailable, find_header_chip, f"{self.mktemp()}/gpiochip*")
        self.assertIn("this kernel has no GPIO support", str(error))

    def test_no_header_label(self) -> None:
        """Chips, but none a Pi's: the labels found are listed."""
        directory = self.devices("gpiochip0")
        error = self.assertRaises(GPIOUnavailable, find_header_chip, f"{directory}/gpiochip*",
                                  gpiod=fake_gpiod({f"{directory}/gpiochip0": "ftdi-cbus"}))  # fmt: skip
        self.assertIn("found: " + f"{directory}/gpiochip0 (ftdi-cbus)", str(error))


class EventTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        chip = os.path.join(directory, "gpiochip0")
        self.gpiod = fake_gpiod({chip: "pinctrl-bcm2711"})
        self.gpio = KernelGPIO("board", chip=chip, gpiod=self.gpiod)
        self.reactor = MemoryReactorClock()
        self.changes = []

    def test_setup_requests_bias_edges_debounce(self) -> None:
        """BOARD 24 is line 8, with a pull-up, both edges, the kernel's debounce and wall-clock stamps."""
        self.gpio.setup_input(24, "up", debounce=0.02)
        settings = self.gpiod.requests[8].settings
        self.assertEqual((settings["bias"], settings["edge_detection"], settings["event_clock"]),
                         ("pull-up", "both", "realtime"))  # fmt: skip
        self.assertEqual(settings["debounce_period"].total_seconds(), 0.02)
        self.assertRaises(PinModeError, self.gpio.read, 26)

    def test_edges_become_changes(self) -> None:
        """Each edge is a change with the kernel's time; the reactor watches the request's descriptor."""
        self.gpio.setup_input(24, "up")
        self.gpio.watch(self.reactor, self.changes.append)
        (reader,) = self.reactor.readers
        self.assertEqual(reader.fileno(), 99)
        self.gpiod.requests[8].events = [event(RISING, 1), event(FALLING, 2)]
        reader.doRead()
        self.assertEqual([(c.channel, c.high, c.lost) for c in self.changes], [(24, True, 0), (24, False, 0)])
        self.assertAlmostEqual(self.changes[0].when, 1796153605.123, places=6)
        self.assertFalse(self.gpio.level(24))

    def test_lost_events_are_counted(self) -> None:
        """A gap in the line's event numbers is events the kernel dropped: said, never silent."""
        self.gpio.setup_input(24, "up")
        self.gpio.watch(self.reactor, self.changes.append)
        self.gpiod.requests[8].events = [event(FALLING, 7), event(RISING, 8)]
        self.reactor.readers.pop().doRead()
        self.assertEqual([(c.high, c.lost) for c in self.changes], [(False, 6), (True, 0)])
        self.assertEqual(self.gpio.lost, {24: 6})

    def test_cleanup_releases(self) -> None:
        """Cleanup stops watching and releases every line."""
        self.gpio.setup_input(24, "up")
        self.gpio.watch(self.reactor, self.changes.append)
        self.gpio.cleanup()
        self.assertEqual(list(self.reactor.readers), [])
        self.assertTrue(self.gpiod.requests[8].released)


class OutputTests(SynchronousTestCase):
    """Outputs: one line request each, made with its initial (safe) value; released as an input."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        chip = os.path.join(directory, "gpiochip0")
        self.gpiod = fake_gpiod({chip: "pinctrl-bcm2711"})
        self.gpio = KernelGPIO("board", chip=chip, gpiod=self.gpiod)

    def test_requested_with_initial_value(self) -> None:
        """BOARD 12 is line 18, requested as an output already driving the safe level."""
        self.gpio.setup_output(12, True)
        request = self.gpiod.requests[18]
        self.assertEqual((request.settings["direction"], request.settings["output_value"]), ("output", "ACTIVE"))
        self.assertEqual(request.log, [])  # no write needed: the request itself set the level

    def test_write_and_release(self) -> None:
        """Writes set the line's value; release writes the safe level, makes it an input, then releases."""
        self.gpio.setup_output(12, False)
        self.gpio.write(12, True)
        self.assertEqual(self.gpiod.requests[18].value, "ACTIVE")
        self.gpio.release_output(12, False)
        self.assertEqual(self.gpiod.requests[18].log,
                         [("set", "ACTIVE"), ("set", "INACTIVE"), ("reconfigure", "input"), ("release",)])  # fmt: skip
        self.assertRaises(PinModeError, self.gpio.write, 12, True)

    def test_no_pwm(self) -> None:
        """The character device has no PWM: the backend does not claim it."""
        from rpisensor.hw.interfaces import IOutputBackend, IPWMBackend

        self.assertTrue(IOutputBackend.providedBy(self.gpio))
        self.assertFalse(IPWMBackend.providedBy(self.gpio))
