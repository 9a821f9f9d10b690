"""
Tests for L{rpisensor.hw.pins}: the 40-pin header's BOARD <-> BCM mapping.
"""

from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.interfaces import GPIOError, PinError
from rpisensor.hw.pins import BCM_TO_BOARD, BOARD_TO_BCM, to_bcm

#: The header's power and ground pins, from the Raspberry Pi pinout.
POWER_AND_GROUND = (1, 2, 4, 6, 9, 14, 17, 20, 25, 30, 34, 39)

GPIO_BOARD_PINS = (
    "3, 5, 7, 8, 10, 11, 12, 13, 15, 16, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29, "
    "31, 32, 33, 35, 36, 37, 38, 40"
)


class MappingTests(SynchronousTestCase):
    """The BOARD_TO_BCM and BCM_TO_BOARD tables."""

    def test_tutorial_button(self) -> None:
        """The tutorial's button on BOARD pin 24 is BCM 8."""
        self.assertEqual(BOARD_TO_BCM[24], 8)
        self.assertEqual(BCM_TO_BOARD[8], 24)

    def test_known_pins(self) -> None:
        """Pins at both ends of the header map to their documented BCM numbers."""
        self.assertEqual(
            {board: BOARD_TO_BCM[board] for board in (3, 5, 27, 28, 37, 40)},
            {3: 2, 5: 3, 27: 0, 28: 1, 37: 26, 40: 21},
        )

    def test_every_bcm_gpio_once(self) -> None:
        """The 28 GPIO pins carry BCM 0 to 27, each exactly once."""
        self.assertEqual(len(BOARD_TO_BCM), 28)
        self.assertEqual(sorted(BOARD_TO_BCM.values()), list(range(28)))

    def test_power_pins_are_not_gpio(self) -> None:
        """Every header pin is either a GPIO or a power/ground pin, never both."""
        self.assertEqual(set(BOARD_TO_BCM) & set(POWER_AND_GROUND), set())
        self.assertEqual(set(BOARD_TO_BCM) | set(POWER_AND_GROUND), set(range(1, 41)))

    def test_inverse(self) -> None:
        """BCM_TO_BOARD undoes BOARD_TO_BCM."""
        self.assertEqual({BCM_TO_BOARD[bcm]: bcm for bcm in BCM_TO_BOARD}, BOARD_TO_BCM)


class ToBCMTests(SynchronousTestCase):
    """L{to_bcm} converts channels and explains the ones that are not GPIO."""

    def test_board(self) -> None:
        """A BOARD GPIO pin gives its BCM number."""
        self.assertEqual(to_bcm("board", 24), 8)
        self.assertEqual(to_bcm("board", 3), 2)

    def test_bcm(self) -> None:
        """A BCM number from 0 to 27 is returned as it is."""
        self.assertEqual([to_bcm("bcm", n) for n in range(28)], list(range(28)))

    def test_board_power_pin(self) -> None:
        """A power or ground pin is refused with the list of the GPIO pins."""
        for pin in POWER_AND_GROUND:
            error = self.assertRaises(PinError, to_bcm, "board", pin)
            self.assertEqual(
                str(error),
                f"BOARD pin {pin} is a power or ground pin, not a GPIO; "
                f"GPIO pins are {GPIO_BOARD_PINS}",
            )

    def test_board_missing_pin(self) -> None:
        """A BOARD number outside 1 to 40 is refused as a pin that does not exist."""
        for pin in (0, 41, -1):
            error = self.assertRaises(PinError, to_bcm, "board", pin)
            self.assertEqual(
                str(error), f"BOARD pin {pin} does not exist; the header has pins 1 to 40"
            )

    def test_bcm_out_of_range(self) -> None:
        """A BCM number outside 0 to 27 is refused with the allowed range."""
        for channel in (28, 40, -1):
            error = self.assertRaises(PinError, to_bcm, "bcm", channel)
            self.assertEqual(
                str(error),
                f"BCM {channel} is not a GPIO on the 40-pin header; use 0 to 27",
            )

    def test_unknown_numbering(self) -> None:
        """A numbering other than board or bcm is refused, naming both."""
        error = self.assertRaises(PinError, to_bcm, "wiringpi", 24)
        self.assertEqual(str(error), "unknown numbering 'wiringpi'; use 'board' or 'bcm'")

    def test_error_classes(self) -> None:
        """PinError is both a GPIOError and a ValueError, so either can catch it."""
        self.assertTrue(issubclass(PinError, GPIOError))
        self.assertTrue(issubclass(PinError, ValueError))
