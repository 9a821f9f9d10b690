"""
Tests for L{rpisensor.hw.simulated}: simulated pins that follow the hardware's rules.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rpisensor.hw.interfaces import IGPIOBackend, PinError, PinModeError, SensorReadError
from rpisensor.hw.simulated import HISTORY_LENGTH, LevelChange, SimulatedGPIO


def make_pins(numbering: str = "board", **options) -> tuple[SimulatedGPIO, Clock]:
    """Simulated pins whose history is timed by a fresh L{Clock}."""
    clock = Clock()
    return SimulatedGPIO(numbering=numbering, clock=clock, **options), clock


class InterfaceTests(SynchronousTestCase):
    """SimulatedGPIO is a full GPIO backend."""

    def test_provides_backend(self) -> None:
        """SimulatedGPIO provides every attribute and method of IGPIOBackend."""
        pins, _ = make_pins()
        self.assertTrue(verifyObject(IGPIOBackend, pins))

    def test_name_and_numbering(self) -> None:
        """The backend is called 'sim' and keeps the numbering it was given."""
        pins, _ = make_pins("bcm")
        self.assertEqual((pins.name, pins.numbering), ("sim", "bcm"))

    def test_unknown_numbering(self) -> None:
        """An unknown numbering is refused when the backend is made."""
        error = self.assertRaises(PinError, SimulatedGPIO, numbering="wiringpi", clock=Clock())
        self.assertEqual(str(error), "unknown numbering 'wiringpi'; use 'board' or 'bcm'")


class LevelTests(SynchronousTestCase):
    """Levels after set-up and when driven."""

    def test_pull_up_reads_high(self) -> None:
        """An input with a pull-up reads high, like a released button."""
        pins, _ = make_pins()
        pins.setup_input(24, "up")
        self.assertIs(pins.read(24), True)

    def test_pull_down_and_off_read_low(self) -> None:
        """An input with a pull-down or no pull reads low."""
        pins, _ = make_pins()
        pins.setup_input(18, "down")
        pins.setup_input(16, "off")
        self.assertEqual((pins.read(18), pins.read(16)), (False, False))

    def test_drive_low_and_high(self) -> None:
        """drive_low makes the input read low, and drive_high high again."""
        pins, _ = make_pins()
        pins.setup_input(24, "up")
        pin = pins.pin(24)
        pin.drive_low()
        self.assertEqual((pins.read(24), pin.high), (False, False))
        pin.drive_high()
        self.assertEqual((pins.read(24), pin.high), (True, True))

    def test_driven_before_setup(self) -> None:
        """A level driven before set-up survives the set-up's pull."""
        pins, _ = make_pins()
        pins.pin(24).drive_low()
        pins.setup_input(24, "up")
        self.assertIs(pins.read(24), False)

    def test_bcm_numbering(self) -> None:
        """In BCM numbering, channels are BCM numbers: BCM 8 is a valid input."""
        pins, _ = make_pins("bcm")
        pins.setup_input(8, "up")
        pins.pin(8).drive_low()
        self.assertIs(pins.read(8), False)

    def test_level_is_not_a_read(self) -> None:
        """level() reports the level without counting a read."""
        pins, _ = make_pins()
        pins.setup_input(24, "up")
        self.assertEqual((pins.level(24), pins.reads), (True, 0))
        pins.read(24)
        self.assertEqual(pins.reads, 1)


class RuleTests(SynchronousTestCase):
    """The simulated pins refuse what real pins refuse."""

    def test_read_without_setup(self) -> None:
        """Reading a channel that was not set up raises PinModeError."""
        pins, _ = make_pins()
        error = self.assertRaises(PinModeError, pins.read, 24)
        self.assertEqual(str(error), "BOARD 24 was not set up as an input")

    def test_setup_power_pin(self) -> None:
        """Setting up a power pin raises PinError and sets nothing up."""
        pins, _ = make_pins()
        self.assertRaises(PinError, pins.setup_input, 1, "up")
        self.assertEqual(pins.set_up_channels, frozenset())

    def test_drive_missing_pin(self) -> None:
        """A handle on a channel that is not a GPIO is refused."""
        pins, _ = make_pins("bcm")
        self.assertRaises(PinError, pins.pin, 28)


class FailureTests(SynchronousTestCase):
    """Injected read failures."""

    def test_fail_reads(self) -> None:
        """fail_reads makes every read raise SensorReadError until reset with None."""
        pins, _ = make_pins()
        pins.setup_input(24, "up")
        pins.fail_reads("sensor unplugged")
        for _ in range(2):
            error = self.assertRaises(SensorReadError, pins.read, 24)
            self.assertEqual(str(error), "sensor unplugged")
        pins.fail_reads(None)
        self.assertIs(pins.read(24), True)

    def test_fail_every(self) -> None:
        """With fail_every=3, exactly reads 3 and 6 fail, each naming its number."""
        pins, _ = make_pins(fail_every=3)
        pins.setup_input(24, "up")
        outcomes = []
        for _ in range(6):
            try:
                outcomes.append(pins.read(24))
            except SensorReadError as e:
                outcomes.append(str(e))
        self.assertEqual(
            outcomes,
            [
                True,
                True,
                "simulated failure of read number 3",
                True,
                True,
                "simulated failure of read number 6",
            ],
        )


class HistoryTests(SynchronousTestCase):
    """Each driven level is recorded with the injected clock's time."""

    def test_history_uses_clock(self) -> None:
        """History entries carry the Clock's seconds at the moment of driving."""
        pins, clock = make_pins()
        pin = pins.pin(24)
        clock.advance(5)
        pin.drive_low()
        clock.advance(2.5)
        pin.drive_high()
        self.assertEqual(
            list(pins.history), [LevelChange(5.0, 24, False), LevelChange(7.5, 24, True)]
        )

    def test_setup_is_not_history(self) -> None:
        """Setting up an input records nothing in the history."""
        pins, _ = make_pins()
        pins.setup_input(24, "up")
        self.assertEqual(list(pins.history), [])

    def test_history_is_bounded(self) -> None:
        """The history keeps the latest HISTORY_LENGTH changes only, oldest dropped first."""
        pins, clock = make_pins()
        pin = pins.pin(24)
        for _ in range(HISTORY_LENGTH + 5):
            clock.advance(1)
            pin.drive_low()
        self.assertEqual(len(pins.history), HISTORY_LENGTH)
        self.assertEqual(pins.history[0].when, 6.0)
        self.assertEqual(pins.history[-1].when, float(HISTORY_LENGTH + 5))


class CleanupTests(SynchronousTestCase):
    """cleanup releases the channels."""

    def test_cleanup_releases_channels(self) -> None:
        """After cleanup no channel is set up, and reading one raises PinModeError."""
        pins, _ = make_pins()
        pins.setup_input(24, "up")
        pins.setup_input(18, "down")
        self.assertEqual(pins.set_up_channels, frozenset({24, 18}))
        pins.cleanup()
        self.assertEqual(pins.set_up_channels, frozenset())
        self.assertRaises(PinModeError, pins.read, 24)


class EdgeTests(SynchronousTestCase):
    """Simulated pins deliver their changes as the kernel does: through a descriptor the reactor reads."""

    def setUp(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        self.reactor = MemoryReactorClock()
        self.pins = SimulatedGPIO(clock=self.reactor)
        self.changes = []

    def watching(self, debounce: float = 0.0):
        self.pins.setup_input(24, "up", debounce=debounce)
        self.pins.watch(self.reactor, self.changes.append)
        self.addCleanup(self.pins.cleanup)
        (reader,) = self.reactor.readers
        return reader

    def test_changes_through_the_pipe(self) -> None:
        """A pin driven from another thread: its change reaches the reactor when it reads the pipe."""
        import threading

        reader = self.watching()
        thread = threading.Thread(target=self.pins.pin(24).drive_low)
        thread.start()
        thread.join()
        self.assertEqual(self.changes, [])  # nothing until the reactor reads
        reader.doRead()
        self.assertEqual([(c.channel, c.high) for c in self.changes], [(24, False)])
        self.assertFalse(self.pins.level(24))

    def test_no_change_no_event(self) -> None:
        """Driving a pin to the level it has is no edge."""
        reader = self.watching()
        self.pins.pin(24).drive_high()
        reader.doRead()
        self.assertEqual(self.changes, [])

    def test_debounce_reports_a_stable_level_once(self) -> None:
        """With a debounce, bounces shorter than it are one change, reported once the level held."""
        reader = self.watching(debounce=0.05)
        for level in (False, True, False, True, False):
            self.pins.set_level(24, level)
            reader.doRead()
            self.reactor.advance(0.01)
        self.assertEqual(self.changes, [])
        self.reactor.advance(0.05)
        self.assertEqual([c.high for c in self.changes], [False])
        self.pins.set_level(24, True)  # a glitch shorter than the debounce
        reader.doRead()
        self.reactor.advance(0.02)
        self.pins.set_level(24, False)
        reader.doRead()
        self.reactor.advance(0.1)
        self.assertEqual([c.high for c in self.changes], [False])

    def test_slow_sensor_is_not_edge_tracked(self) -> None:
        """Pins playing a slow or failing sensor must be read: they do not claim to know their level."""
        self.assertTrue(SimulatedGPIO().tracks_levels)
        self.assertFalse(SimulatedGPIO(latency=0.05).tracks_levels)
        self.assertFalse(SimulatedGPIO(fail_every=3).tracks_levels)
