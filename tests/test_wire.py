"""Tests for rpisensor.wire: the pure encode/decode of one message."""

from twisted.trial.unittest import SynchronousTestCase

from rpisensor import wire


class EncodeDecodeTests(SynchronousTestCase):
    def test_frame_is_utf8_and_one_nul(self):
        """A message is its UTF-8 bytes followed by exactly one NUL, as the tutorial sends."""
        self.assertEqual(wire.frame("Button pressed"), b"Button pressed\0")
        self.assertEqual(wire.frame("Grüße 23 °C"), "Grüße 23 °C".encode() + b"\0")

    def test_encode_refuses_nul(self):
        """Text with a NUL inside cannot be framed; the error says where the NUL is."""
        error = self.assertRaises(wire.MessageError, wire.encode, "go\0go")
        self.assertIn("index 2", str(error))

    def test_message_error_is_value_error(self):
        """Callers that catch ValueError also catch framing errors."""
        self.assertTrue(issubclass(wire.MessageError, ValueError))

    def test_decode_invalid_utf8(self):
        """Invalid UTF-8 raises MessageError naming the offending byte and offset."""
        error = self.assertRaises(wire.MessageError, wire.decode, b"ok\xff")
        self.assertIn("0xff", str(error))
        self.assertIn("offset 2", str(error))

    def test_decode_round_trip(self):
        """decode reverses encode."""
        self.assertEqual(wire.decode(wire.encode("ping ✓")), "ping ✓")


class ParseCommandTests(SynchronousTestCase):
    def test_plain(self):
        """A bare verb has no arguments."""
        self.assertEqual(wire.parse_command("go"), ("go", []))

    def test_whitespace_and_crlf(self):
        """Spaces, tabs and CR/LF around or between words are ignored; the verb is lower-cased."""
        self.assertEqual(wire.parse_command(" GO\r\n"), ("go", []))
        self.assertEqual(wire.parse_command("read\t door \n"), ("read", ["door"]))

    def test_empty(self):
        """An empty or blank message has an empty verb."""
        self.assertEqual(wire.parse_command(""), ("", []))
        self.assertEqual(wire.parse_command(" \r\n"), ("", []))
