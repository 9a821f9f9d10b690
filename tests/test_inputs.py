"""
Tests for L{rpisensor.sensing.inputs}: named inputs and the C{--input} spec
syntax, and the inputs the roles' options give (default pin, one pin each).
"""

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.sensing.inputs import DEFAULT_INPUT, InputSpec, default_input, default_texts, parse_input


class ParseGoodTests(SynchronousTestCase):
    """Specs that parse."""

    def test_pin_only(self) -> None:
        """button=24 is the tutorial's button: pull-up, active low, its texts."""
        self.assertEqual(parse_input("button=24"), DEFAULT_INPUT)
        self.assertEqual(
            DEFAULT_INPUT,
            InputSpec("button", 24, "up", True, "Button pressed", "Button released"),
        )

    def test_every_setting(self) -> None:
        """All four settings are applied."""
        self.assertEqual(
            parse_input("door=18,pull=down,active=high,on=Door open,off=Door shut"),
            InputSpec("door", 18, "down", False, "Door open", "Door shut"),
        )

    def test_debounce(self) -> None:
        """debounce= is whole milliseconds; it becomes seconds; anything else is refused, saying so."""
        self.assertEqual(parse_input("door=18,debounce=20").debounce, 0.02)
        self.assertEqual(parse_input("door=18").debounce, 0.0)
        for bad in ("door=18,debounce=fast", "door=18,debounce=2.5", "door=18,debounce=20000"):
            with self.subTest(bad=bad):
                error = self.assertRaises(ValueError, parse_input, bad)
                self.assertIn("debounce= is whole milliseconds from 0 to 10000", str(error))

    def test_pull_off(self) -> None:
        """pull=off is accepted."""
        self.assertEqual(parse_input("door=18,pull=off").pull, "off")

    def test_whitespace(self) -> None:
        """Spaces around the name, the keys, pull and active are ignored."""
        self.assertEqual(
            parse_input(" door =18, pull = down , active = high"),
            InputSpec("door", 18, "down", False, "door active", "door inactive"),
        )

    def test_texts_verbatim(self) -> None:
        """on= and off= texts are kept as written, spaces and '=' included."""
        spec = parse_input("door=18,on= Open ,off=a=b")
        self.assertEqual((spec.active_text, spec.inactive_text), (" Open ", "a=b"))

    def test_bcm_numbering(self) -> None:
        """In BCM numbering, the pin is a BCM number and is kept as given."""
        self.assertEqual(parse_input("button=8", "bcm").pin, 8)

    def test_default_texts_for_other_names(self) -> None:
        """An input not called button gets '<name> active' and '<name> inactive'."""
        spec = parse_input("door=18")
        self.assertEqual((spec.active_text, spec.inactive_text), ("door active", "door inactive"))


class ParseBadTests(SynchronousTestCase):
    """Specs that are refused, each with a message saying what is wrong."""

    def assertRefused(self, spec: str, message: str, numbering: str = "board") -> None:
        error = self.assertRaises(ValueError, parse_input, spec, numbering)
        self.assertEqual(str(error), message)

    def test_missing_equals(self) -> None:
        """A spec without NAME= shows the expected form."""
        self.assertRefused(
            "24", "expected NAME=PIN[,pull=up|down|off][,active=low|high], got '24'"
        )

    def test_empty_name(self) -> None:
        """An empty name shows the expected form."""
        self.assertRefused(
            "=24", "expected NAME=PIN[,pull=up|down|off][,active=low|high], got '=24'"
        )

    def test_name_not_identifier(self) -> None:
        """A name that is not an identifier shows the expected form."""
        self.assertRefused(
            "front door=24",
            "expected NAME=PIN[,pull=up|down|off][,active=low|high], got 'front door=24'",
        )

    def test_pin_not_number(self) -> None:
        """A pin that is not a number is named in the message."""
        self.assertRefused("door=abc", "pin of input 'door' must be a number, got 'abc'")

    def test_pin_missing(self) -> None:
        """An empty pin is refused as not a number."""
        self.assertRefused("door=,pull=up", "pin of input 'door' must be a number, got ''")

    def test_power_pin(self) -> None:
        """A BOARD power pin is refused with the GPIO pins listed."""
        error = self.assertRaises(ValueError, parse_input, "door=1")
        self.assertTrue(
            str(error).startswith(
                "input 'door': BOARD pin 1 is a power or ground pin, not a GPIO; "
                "GPIO pins are 3, 5, 7,"
            ),
            str(error),
        )

    def test_board_pin_missing(self) -> None:
        """A BOARD pin past 40 is refused as not existing."""
        self.assertRefused(
            "door=41", "input 'door': BOARD pin 41 does not exist; the header has pins 1 to 40"
        )

    def test_bcm_out_of_range(self) -> None:
        """In BCM numbering a channel past 27 is refused."""
        self.assertRefused(
            "door=28",
            "input 'door': BCM 28 is not a GPIO on the 40-pin header; use 0 to 27",
            numbering="bcm",
        )

    def test_unknown_setting(self) -> None:
        """An unknown key is refused with the keys allowed."""
        self.assertRefused(
            "door=18,colour=red",
            "input 'door': unknown setting 'colour=red'; use pull=, active=, on=, off= or debounce=",
        )

    def test_setting_without_value(self) -> None:
        """A setting without '=' is refused as unknown."""
        self.assertRefused(
            "door=18,pull",
            "input 'door': unknown setting 'pull'; use pull=, active=, on=, off= or debounce=",
        )

    def test_bad_pull(self) -> None:
        """A pull other than up, down or off is refused."""
        self.assertRefused(
            "door=18,pull=sideways",
            "input 'door': pull must be up, down or off, got 'sideways'",
        )

    def test_bad_active(self) -> None:
        """An active level other than low or high is refused."""
        self.assertRefused(
            "door=18,active=maybe", "input 'door': active must be low or high, got 'maybe'"
        )

    def test_empty_text(self) -> None:
        """An empty on= text is refused."""
        self.assertRefused(
            "door=18,on=", "input 'door': on= text must be non-empty and contain no NUL"
        )

    def test_nul_in_text(self) -> None:
        """An off= text containing NUL is refused, since NUL ends a message."""
        self.assertRefused(
            "door=18,off=a\0b", "input 'door': off= text must be non-empty and contain no NUL"
        )


class TextTests(SynchronousTestCase):
    """Which text each level gives."""

    def test_default_texts(self) -> None:
        """button gets the tutorial's texts, other names their own."""
        self.assertEqual(default_texts("button"), ("Button pressed", "Button released"))
        self.assertEqual(default_texts("door"), ("door active", "door inactive"))

    def test_active_low(self) -> None:
        """An active-low input is active (pressed) when low."""
        self.assertEqual(
            (DEFAULT_INPUT.text_for(False), DEFAULT_INPUT.text_for(True)),
            ("Button pressed", "Button released"),
        )

    def test_active_high(self) -> None:
        """An active-high input is active when high."""
        spec = parse_input("door=18,active=high")
        self.assertEqual(
            (spec.text_for(True), spec.text_for(False)), ("door active", "door inactive")
        )


def parse_role(*args: str):
    """The options of the role in C{args} (C{serve} or C{report}), parsed as twistd would."""
    from rpisensor.app.tap import Options

    options = Options()
    options.parseOptions(list(args))
    return options.subOptions


class DefaultInputTests(SynchronousTestCase):
    """The default input names a physical pin, BOARD 24, whatever the numbering."""

    def test_board(self) -> None:
        """In BOARD numbering the default button is on pin 24."""
        self.assertEqual(parse_role("serve")["inputs"], [DEFAULT_INPUT])
        self.assertEqual(default_input("board"), DEFAULT_INPUT)

    def test_bcm_keeps_the_physical_pin(self) -> None:
        """With --numbering bcm and no --input, the button is BCM 8: still BOARD pin 24."""
        for role in (("serve",), ("report", "--connect", "tcp:host=pc:port=22000")):
            [button] = parse_role(*role, "--numbering", "bcm")["inputs"]
            self.assertEqual((button.name, button.pin, button.pull, button.active_low), ("button", 8, "up", True))
            self.assertEqual(button.describe("bcm"), "button on BOARD 24 (BCM 8), pull up, active low")

    def test_describe(self) -> None:
        """An input's description has its pin in both numberings, its pull and active level."""
        door = parse_input("door=18,pull=down,active=high")
        self.assertEqual(door.describe("board"), "door on BOARD 18 (BCM 24), pull down, active high")


class OnePinOneInputTests(SynchronousTestCase):
    """Two inputs on one pin are refused when the options are parsed."""

    def test_same_pin_refused(self) -> None:
        """The usage error names both inputs and the pin."""
        error = self.assertRaises(
            UsageError, parse_role, "serve", "--input", "button=24", "--input", "door=24,active=high"
        )
        self.assertEqual(
            str(error),
            "--input: 'button' and 'door' are both on BOARD pin 24; give each input its own pin",
        )

    def test_same_pin_in_bcm(self) -> None:
        """In BCM numbering the pin is named in BCM."""
        error = self.assertRaises(
            UsageError, parse_role, "report", "--connect", "tcp:host=pc:port=22000",
            "--numbering", "bcm", "--input", "a=8", "--input", "b=8",
        )  # fmt: skip
        self.assertIn("'a' and 'b' are both on BCM pin 8", str(error))

    def test_different_pins_accepted(self) -> None:
        """Inputs on different pins are all kept, in order."""
        inputs = parse_role("serve", "--input", "a=24", "--input", "b=18")["inputs"]
        self.assertEqual([(spec.name, spec.pin) for spec in inputs], [("a", 24), ("b", 18)])
