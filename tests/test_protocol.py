"""Tests for rpisensor.net.framing.NullTerminatedProtocol, with StringTransport."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.internet.testing import EventLoggingObserver
from twisted.trial.unittest import SynchronousTestCase

from rpisensor import wire
from rpisensor.net.framing import NullTerminatedProtocol


class Recorder(NullTerminatedProtocol):
    """Records what the framing layer hands up."""

    def __init__(self):
        self.messages = []
        self.invalid = []
        self.too_long = []

    def messageReceived(self, text):
        self.messages.append(text)

    def invalidMessageReceived(self, body, error):
        self.invalid.append((body, error))
        super().invalidMessageReceived(body, error)

    def messageTooLong(self, length):
        self.too_long.append(length)
        super().messageTooLong(length)


def connected(max_message_bytes=None):
    factory = Factory()
    if max_message_bytes is not None:
        factory.maxMessageBytes = max_message_bytes
    protocol = Recorder()
    protocol.factory = factory
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class FramingTests(SynchronousTestCase):
    def test_byte_at_a_time(self):
        """Messages delivered one byte per TCP segment arrive whole and in order."""
        protocol, _ = connected()
        for byte in b"go\0Button pressed\0\xc3\xa4\0":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(protocol.messages, ["go", "Button pressed", "ä"])

    def test_ten_thousand_in_one_chunk(self):
        """10,000 messages packed into one segment are all delivered, in order."""
        protocol, transport = connected()
        protocol.dataReceived(b"".join(b"m%d\0" % i for i in range(10_000)))
        self.assertEqual(protocol.messages, [f"m{i}" for i in range(10_000)])
        self.assertFalse(transport.disconnecting)

    def test_partial_message_is_kept(self):
        """A message without its NUL yet is not delivered until the NUL arrives."""
        protocol, _ = connected()
        protocol.dataReceived(b"Butt")
        self.assertEqual(protocol.messages, [])
        protocol.dataReceived(b"on released\0")
        self.assertEqual(protocol.messages, ["Button released"])

    def test_empty_message(self):
        """Two NULs in a row deliver one empty message."""
        protocol, _ = connected()
        protocol.dataReceived(b"\0")
        self.assertEqual(protocol.messages, [""])


class LimitTests(SynchronousTestCase):
    def test_exactly_at_limit(self):
        """A message of exactly the limit is delivered and the connection stays open."""
        protocol, transport = connected(max_message_bytes=100)
        protocol.dataReceived(b"x" * 100 + b"\0")
        self.assertEqual(protocol.messages, ["x" * 100])
        self.assertFalse(transport.disconnecting)

    def test_one_byte_over_limit(self):
        """A message one byte over the limit is not delivered; the connection is closed."""
        protocol, transport = connected(max_message_bytes=100)
        protocol.dataReceived(b"ok\0" + b"x" * 101 + b"\0")
        self.assertEqual(protocol.messages, ["ok"])
        self.assertTrue(transport.disconnecting)

    def test_over_limit_without_nul(self):
        """A runaway message is cut off as soon as it passes the limit, before any NUL."""
        protocol, transport = connected(max_message_bytes=100)
        protocol.dataReceived(b"x" * 60)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x" * 41)
        self.assertTrue(transport.disconnecting)

    def test_too_long_is_logged(self):
        """The log line for a too-long message gives its size and the limit."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, _ = connected(max_message_bytes=10)
        protocol.dataReceived(b"y" * 11)
        warnings = [e for e in events if e.get("limit") == 10]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["length"], 11)

    def test_factory_limit_overrides_default(self):
        """The factory's maxMessageBytes sets the limit for its connections."""
        protocol, _ = connected(max_message_bytes=5)
        self.assertEqual(protocol.MAX_LENGTH, 5)
        other, _ = connected()
        self.assertEqual(other.MAX_LENGTH, wire.DEFAULT_MAX_MESSAGE_BYTES)


class InvalidInputTests(SynchronousTestCase):
    def test_invalid_utf8_goes_to_hook(self):
        """Invalid UTF-8 goes to invalidMessageReceived; later messages still arrive."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport = connected()
        protocol.dataReceived(b"\xff\xfe\0go\0")
        self.assertEqual(protocol.messages, ["go"])
        self.assertEqual([body for body, _ in protocol.invalid], [b"\xff\xfe"])
        self.assertIsInstance(protocol.invalid[0][1], wire.MessageError)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len([e for e in events if "error" in e]), 1)

    def test_send_message(self):
        """sendMessage writes the UTF-8 text and one NUL."""
        protocol, transport = connected()
        protocol.sendMessage("Button pressed")
        self.assertEqual(transport.value(), b"Button pressed\0")

    def test_send_message_refuses_nul(self):
        """sendMessage refuses text with a NUL and writes nothing."""
        protocol, transport = connected()
        self.assertRaises(wire.MessageError, protocol.sendMessage, "a\0b")
        self.assertEqual(transport.value(), b"")

    def test_send_line_refuses_nul(self):
        """The inherited sendLine also refuses a body with a NUL inside."""
        protocol, transport = connected()
        self.assertRaises(wire.MessageError, protocol.sendLine, b"a\0b")
        self.assertEqual(transport.value(), b"")

    def test_stops_after_disconnect(self):
        """Once the connection is closing, the rest of a segment is not delivered."""

        class Closer(Recorder):
            def messageReceived(self, text):
                super().messageReceived(text)
                self.transport.loseConnection()

        protocol = Closer()
        protocol.factory = Factory()
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"a\0b\0c\0")
        self.assertEqual(protocol.messages, ["a"])

    def test_connection_lost_drops_what_is_held(self):
        """
        Once the connection is lost, neither a partial message nor messages held by pauseMessages
        are delivered, even if resumeMessages is called afterwards.
        """
        protocol, _ = connected()
        protocol.pauseMessages()
        protocol.dataReceived(b"whole\0half")
        protocol.connectionLost(Failure(ConnectionError("reset")))
        protocol.resumeMessages()
        self.assertEqual(protocol.messages, [])

    def test_nothing_after_too_long(self):
        """After a message over the limit, later bytes are neither delivered nor reported again."""
        protocol, transport = connected(max_message_bytes=4)
        protocol.dataReceived(b"ok\0" + b"x" * 5)
        protocol.dataReceived(b"y" * 10)
        protocol.dataReceived(b"\0go\0")
        self.assertEqual((protocol.messages, protocol.too_long), (["ok"], [5]))
        self.assertTrue(transport.disconnecting)


texts = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40)


#: The message limit of the model-based test: small, so that over-long parts are common.
LIMIT = 16
#: Pieces of a byte stream: delimiters, ASCII, halves of a UTF-8 character, bytes never valid.
pieces = st.lists(
    st.one_of(
        st.sampled_from([b"\0", b"go", b"ping\0", b"\xc3", b"\xa4", b"\xc3\xa4\0", b"\xff\0"]),
        st.binary(max_size=24),
    ),
    max_size=40,
)


def framing_model(stream: bytes, limit: int) -> tuple[list[str], list[bytes], int]:
    """
    What the framing should make of C{stream} however it is chunked: the messages, the bodies
    that are not UTF-8, and how many times a part over the limit was reported (0 or 1).
    """
    messages, invalid = [], []
    *complete, rest = stream.split(b"\0")
    for body in complete:
        if len(body) > limit:
            return messages, invalid, 1
        try:
            messages.append(body.decode("utf-8"))
        except UnicodeDecodeError:
            invalid.append(body)
    return messages, invalid, int(len(rest) > limit)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(messages=st.lists(texts, max_size=30), cuts=st.lists(st.integers(0, 2000), max_size=20))
    def test_any_chunking(self, messages, cuts):
        """Any sequence of valid messages, cut into any chunks, is received exactly, in order."""
        stream = b"".join(wire.frame(m) for m in messages)
        protocol, _ = connected()
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for start, end in zip(points, points[1:]):
            protocol.dataReceived(stream[start:end])
        self.assertEqual(protocol.messages, messages)

    @settings(max_examples=500, deadline=None)
    @given(pieces=pieces, cuts=st.lists(st.integers(0, 4000), max_size=25))
    def test_any_bytes_as_the_model_says(self, pieces, cuts):
        """
        Any bytes in any chunks give exactly what a model of the framing says: the messages before
        the first part over the limit, UTF-8 ones delivered and others reported, then one report of
        the long part and the close; never an exception.
        """
        stream = b"".join(pieces)
        protocol, transport = connected(max_message_bytes=LIMIT)
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for start, end in zip(points, points[1:]):
            protocol.dataReceived(stream[start:end])
        messages, invalid, too_long = framing_model(stream, LIMIT)
        self.assertEqual(protocol.messages, messages)
        self.assertEqual([body for body, _ in protocol.invalid], invalid)
        self.assertEqual(len(protocol.too_long), too_long)
        self.assertEqual(transport.disconnecting, bool(too_long))

    @settings(max_examples=300, deadline=None)
    @given(pieces=pieces, cuts=st.lists(st.integers(0, 4000), max_size=25),
           hold_every=st.integers(1, 5), resumes=st.lists(st.booleans(), max_size=25))  # fmt: skip
    def test_held_back_as_the_model_says(self, pieces, cuts, hold_every, resumes):
        """
        Holding messages back after every few (pauseMessages, as a connection with too much work
        does) and resuming at any point, new bytes arriving meanwhile, changes nothing of what is
        delivered, or of its order: the same as the model, once everything held is let through.
        """
        stream = b"".join(pieces)
        factory = Factory()
        factory.maxMessageBytes = LIMIT
        protocol = Holder(hold_every)
        protocol.factory = factory
        transport = StringTransport()
        protocol.makeConnection(transport)
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for n, (start, end) in enumerate(zip(points, points[1:])):
            protocol.dataReceived(stream[start:end])
            if n < len(resumes) and resumes[n]:
                protocol.resumeMessages()
        while protocol.holds_messages:
            protocol.resumeMessages()
        messages, invalid, too_long = framing_model(stream, LIMIT)
        self.assertEqual(protocol.messages, messages)
        self.assertEqual([body for body, _ in protocol.invalid], invalid)
        self.assertEqual(len(protocol.too_long), too_long)


class Holder(Recorder):
    """Holds messages back (pauseMessages) after every C{hold_every}-th it is handed."""

    def __init__(self, hold_every: int) -> None:
        super().__init__()
        self.hold_every = hold_every
        self.handed = 0

    def _handed(self) -> None:
        self.handed += 1
        if self.handed % self.hold_every == 0:
            self.pauseMessages()

    def messageReceived(self, text):
        super().messageReceived(text)
        self._handed()

    def invalidMessageReceived(self, body, error):
        super().invalidMessageReceived(body, error)
        self._handed()
