"""Tests for L{rpisensor.wire.v2}: every frame round-trips; malformed ones get a specific error."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rpisensor import wire
from rpisensor.wire import v2
from rpisensor.entries import Gap, Reading
from rpisensor.wire.v2 import Ack, FrameError, Heartbeat, Hello, Last, Match, Probe, Refused, Subscribe, Welcome

STREAM = "8f3a1c2e9b7d4a60"
READING = Reading(stream=STREAM, seq=42, ts="2026-12-01T19:33:25.123Z", synced=True, sensor="button", value=1, text="Button pressed")

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
seqs = st.integers(0, v2.MAX_SEQ)
texts = st.text(max_size=60)
digests = st.from_regex(r"[0-9a-f]{16}", fullmatch=True)
owners = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
stamps = st.floats(0, 4_000_000_000).map(v2.format_timestamp)
readings = st.builds(
    Reading,
    stream=ids,
    seq=seqs,
    ts=stamps,
    synced=st.booleans(),
    sensor=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
    value=st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)),
    text=texts,
    unit=st.one_of(st.none(), st.text(max_size=16)),
    digest=st.one_of(st.just(""), digests),
    snapshot=st.booleans(),
)
frames = st.one_of(
    readings,
    st.builds(lambda s, a, b, r, d: Gap(stream=s, first=min(a, b), last=max(a, b), reason=r, digest=d), ids, seqs,
              seqs, st.text(max_size=50), st.one_of(st.just(""), digests)),  # fmt: skip
    st.builds(Ack, seqs),
    st.builds(Subscribe, st.one_of(st.none(), seqs), st.one_of(st.none(), digests)),
    st.builds(Probe, seqs),
    st.builds(Last, seqs),
    st.builds(Match, seqs, st.one_of(st.none(), seqs), st.one_of(st.none(), digests)),
    st.builds(Refused, st.text(max_size=100)),
    st.just(Heartbeat()),
    st.builds(Hello, st.just("report"), ids, ids, st.one_of(st.none(), st.floats(0.1, 3600)), st.one_of(st.none(), seqs),
              owner=st.one_of(st.none(), owners), incarnation=st.one_of(st.none(), st.from_regex(r"[0-9a-f]{8}", fullmatch=True))),
    st.builds(Hello, st.just("subscribe")),
    st.builds(Welcome, st.one_of(st.none(), seqs), st.one_of(st.none(), ids), st.one_of(st.none(), ids),
              digest=st.one_of(st.none(), digests), owner=st.one_of(st.none(), owners)),
)


class RoundTripTests(SynchronousTestCase):
    def test_reading_text(self) -> None:
        """A reading's frame is the verb and compact JSON, as the protocol reference shows."""
        self.assertEqual(
            v2.encode(READING),
            'reading {"stream":"8f3a1c2e9b7d4a60","seq":42,"ts":"2026-12-01T19:33:25.123Z",'
            '"synced":true,"sensor":"button","value":1,"text":"Button pressed"}',
        )

    @given(frames)
    @settings(max_examples=300)
    def test_round_trip(self, frame) -> None:
        """Any frame parses back to itself, and fits in one NUL-ended message."""
        text = v2.encode(frame)
        self.assertNotIn("\0", text)
        wire.frame(text)  # no NUL inside
        self.assertEqual(v2.parse(text), frame)
        self.assertTrue(v2.is_v2(text))

    def test_nul_in_text_is_escaped(self) -> None:
        """A NUL in a reading's text travels escaped, never raw."""
        frame = Reading(stream=STREAM, seq=1, ts=READING.ts, synced=False, sensor="door", value=0, text="a\0b")
        text = v2.encode(frame)
        self.assertNotIn("\0", text)
        self.assertEqual(v2.parse(text).text, "a\0b")

    def test_bare_subscribe_and_heartbeat(self) -> None:
        """C{subscribe} alone is a fresh subscription; C{heartbeat} has no body."""
        self.assertEqual(v2.parse("subscribe"), Subscribe())
        self.assertEqual(v2.parse("heartbeat"), Heartbeat())

    def test_timestamps(self) -> None:
        """Timestamps are UTC with milliseconds and a Z."""
        self.assertEqual(v2.format_timestamp(1796153605.1234), "2026-12-01T19:33:25.123Z")
        self.assertEqual(v2.parse_timestamp("2026-12-01T19:33:25.123Z").timestamp(), 1796153605.123)


class CanonicalReadingTests(SynchronousTestCase):
    """The fast path for readings as encode() writes them gives what the general parser gives, or steps aside."""

    def general(self, text: str):
        try:
            return v2._parse_any(text)
        except FrameError as e:
            return str(e)

    def test_plain_reading_takes_the_fast_path(self) -> None:
        """The readings a reporter sends (plain text, no escapes) are matched by the fast path."""
        measured = Reading(stream=STREAM, seq=7, ts=READING.ts, synced=False, sensor="t_1", value=-2.5e-3, text="21.5 C",
                           unit="C", snapshot=True)  # fmt: skip
        chained = Reading(stream=STREAM, seq=8, ts=READING.ts, sensor="door", value=0, text="Door closed",
                          digest="0123456789abcdef")  # fmt: skip
        for reading in (READING, measured, chained):
            with self.subTest(reading=reading):
                self.assertEqual(v2._canonical_reading(v2.encode(reading)), reading)

    @given(readings)
    @settings(max_examples=500)
    def test_same_as_the_general_parser(self, reading) -> None:
        """For any reading, the fast path returns the same reading as the general parser, or nothing."""
        text = v2.encode(reading)
        fast = v2._canonical_reading(text)
        if fast is not None:
            self.assertEqual(fast, reading)
            self.assertEqual(type(fast.value), type(reading.value))
        self.assertEqual(v2.parse(text), self.general(text))

    @given(readings, st.integers(0, 400), st.integers(0, 400), st.text(max_size=3))
    @settings(max_examples=1000)
    def test_spliced_text_same_as_the_general_parser(self, reading, start, length, insert) -> None:
        """A reading's text with any part replaced: the fast path never accepts what the general path refuses."""
        text = v2.encode(reading)
        spliced = text[:start] + insert + text[start + length :]
        fast = v2._canonical_reading(spliced)
        if fast is not None:
            self.assertEqual(fast, self.general(spliced))

    def test_edges_step_aside(self) -> None:
        """What the fast path must not take (out of range, not a real date, escapes) gets the general answer."""
        base = v2.encode(READING)
        cases = [
            base.replace('"seq":42', f'"seq":{v2.MAX_SEQ + 1}'),
            base.replace("2026-12-01", "2026-13-01"),
            base.replace('"value":1', '"value":1e999'),
            base.replace('"value":1', '"value":' + "9" * 30),
            base.replace("Button pressed", 'Button \\"pressed\\"'),
            base.replace("Button pressed", "Button\tpressed"),
        ]
        for text in cases:
            with self.subTest(text=text):
                self.assertIsNone(v2._canonical_reading(text))
                try:
                    parsed = v2.parse(text)
                except FrameError as e:
                    parsed = str(e)
                self.assertEqual(parsed, self.general(text))


class MalformedTests(SynchronousTestCase):
    def assertRefused(self, text: str, wanted: str) -> None:
        error = self.assertRaises(FrameError, v2.parse, text)
        self.assertIn(wanted, str(error))
        self.assertIsInstance(error, wire.MessageError)

    def test_specific_errors(self) -> None:
        """Each kind of mistake is named."""
        body = '"stream":"s1","seq":1,"ts":"2026-12-01T19:33:25.123Z","synced":true,"sensor":"b","value":1'
        cases = [
            ("gossip {}", "unknown frame 'gossip'"),
            ("reading", "reading needs a JSON object"),
            ("reading [1]", "expected a JSON object"),
            ("reading {nope", "is not JSON"),
            ('reading {"stream":"s1"}', "'seq' is missing"),
            ("reading {" + body + ',"text":5}', "'text' must be text"),
            ("reading {" + body.replace('"seq":1', '"seq":-1') + ',"text":"t"}', "'seq' must be a whole number"),
            ("reading {" + body.replace('"seq":1', '"seq":true') + ',"text":"t"}', "'seq' must be a whole number"),
            ("reading {" + body.replace('"seq":1', '"seq":1.5') + ',"text":"t"}', "'seq' must be a whole number"),
            ("reading {" + body.replace("19:33", "7pm") + ',"text":"t"}', "'ts' must be ISO 8601 UTC"),
            ("reading {" + body.replace(".123Z", ".123") + ',"text":"t"}', "'ts' must be ISO 8601 UTC"),
            ("reading {" + body.replace('"value":1', '"value":"on"') + ',"text":"t"}', "'value' must be a finite"),
            ("reading {" + body.replace('"value":1', '"value":NaN') + ',"text":"t"}', "is not JSON"),
            ("reading {" + body.replace('"value":1', '"value":' + "9" * 400) + ',"text":"t"}', "whole ones from"),
            ("reading {" + body.replace('"sensor":"b"', '"sensor":"no spaces"') + ',"text":"t"}', "'sensor' must be"),
            ("reading {" + body.replace('"stream":"s1"', '"stream":"a/b"') + ',"text":"t"}', "'stream' must be"),
            ('gap {"stream":"s","from":5,"to":4,"reason":"x"}', "'from' (5) is after 'to' (4)"),
            ('ack {"seq":"3"}', "'seq' must be a whole number"),
            ('hello {"v":3,"role":"report"}', "speaks version 2, not 3"),
            ('hello {"v":2,"role":"spy"}', "'role' must be 'report' or 'subscribe'"),
            ('hello {"v":2,"role":"report","stream":"s"}', "'device' is missing"),
            ('hello {"v":2,"role":"subscribe","heartbeat":0}', "'heartbeat' must be a number of seconds"),
            ("heartbeat now", "heartbeat takes nothing"),
            ("reading " + "[" * 100000, "is not JSON"),
        ]
        for text, wanted in cases:
            with self.subTest(text=text[:60]):
                self.assertRefused(text, wanted)

    @given(st.text(max_size=200))
    @settings(max_examples=500)
    def test_fuzz_text(self, text) -> None:
        """Any text parses to a frame or fails with FrameError, nothing else."""
        try:
            v2.parse(text)
        except FrameError:
            pass

    @given(st.sampled_from(v2.VERBS), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(
            st.sampled_from(["v", "role", "device", "stream", "seq", "ts", "synced", "sensor", "value",
                             "text", "unit", "from", "to", "reason", "after", "acked", "first", "last"]),
            children, max_size=10),
        max_leaves=20))  # fmt: skip
    @settings(max_examples=500)
    def test_fuzz_json(self, verb, body) -> None:
        """Any JSON after a v2 verb parses or fails with FrameError, nothing else."""
        import json

        try:
            v2.parse(f"{verb} {json.dumps(body)}")
        except FrameError:
            pass


#: Any code point, lone surrogates (U+D800 to U+DFFF) included: what JSON's escapes can spell.
any_characters = st.one_of(
    st.characters(codec=None, exclude_categories=()), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
)
any_texts = st.text(any_characters, max_size=40)


def stored_text_ok(frame) -> bool:
    """Whether every text of C{frame} is one a store can hold: it encodes to UTF-8."""
    values = [getattr(frame, f.name) for f in fields(frame)] if is_dataclass(frame) else vars(frame).values()
    for value in values:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


class StorableTextTests(SynchronousTestCase):
    """A frame's texts are ones the store can hold: half a UTF-16 pair is refused at the edge."""

    BODY = '"stream":"s1","seq":1,"ts":"2026-12-01T19:33:25.123Z","synced":true,"sensor":"b","value":1'

    def test_lone_surrogates_are_refused_naming_the_field(self) -> None:
        """A JSON escape of half a surrogate pair in text, unit or reason gets a FrameError naming it."""
        cases = [
            ("reading {" + self.BODY + r',"text":"\ud800"}', "'text' holds \\ud800"),
            ("reading {" + self.BODY + r',"text":"ok \udfff"}', "'text' holds \\udfff"),
            ("reading {" + self.BODY + r',"text":"t","unit":"\udc00C"}', "'unit' holds \\udc00"),
            (r'gap {"stream":"s","from":1,"to":4,"reason":"\ud83d"}', "'reason' holds \\ud83d"),
        ]
        for text, wanted in cases:
            with self.subTest(text=text):
                error = self.assertRaises(FrameError, v2.parse, text)
                self.assertIn(wanted, str(error))
                self.assertIn("cannot be stored", str(error))

    def test_a_whole_pair_is_a_character(self) -> None:
        """Both halves of a pair, escaped, are the one character they spell."""
        frame = v2.parse("reading {" + self.BODY + r',"text":"\ud83d\ude00"}')
        self.assertEqual(frame.text, "\U0001f600")

    def test_fast_path_refuses_raw_surrogates_too(self) -> None:
        """Text that somehow holds a raw surrogate is not taken by the fast path, and the general one refuses it."""
        text = v2.encode(READING).replace("Button pressed", "Button \ud800")
        self.assertIsNone(v2._canonical_reading(text))
        self.assertRaises(FrameError, v2.parse, text)

    @given(readings, any_texts, st.one_of(st.none(), st.text(any_characters, max_size=16)))
    @settings(max_examples=500)
    def test_fuzz_escaped_texts(self, reading, text, unit) -> None:
        """
        Any text, escaped as JSON may escape it: a reading parses only when every
        text in it can be stored, and both parsers agree.
        """
        import json

        body = json.loads(v2.encode(reading)[len("reading "):])
        body["text"] = text
        if unit is None:
            body.pop("unit", None)
        else:
            body["unit"] = unit
        for ascii_only in (True, False):
            try:
                message = "reading " + json.dumps(body, ensure_ascii=ascii_only, separators=(",", ":"))
            except UnicodeEncodeError:  # pragma: no cover - json.dumps writes surrogates either way
                continue
            try:
                parsed = v2.parse(message)
            except FrameError:
                parsed = None
            try:
                general = v2._parse_any(message)
            except FrameError:
                general = None
            self.assertEqual(parsed, general)
            storable = stored_text_ok(SimpleNamespace(text=text, unit=unit))
            if parsed is not None:
                self.assertTrue(stored_text_ok(parsed))
            elif storable and len(text) <= 1024 and (unit is None or len(unit) <= 16):
                self.fail(f"a storable reading was refused: {message!r}")

    @given(st.sampled_from(["reading", "gap", "hello", "welcome"]), st.dictionaries(
        st.sampled_from(["v", "role", "device", "stream", "seq", "ts", "synced", "sensor", "value", "text",
                         "unit", "from", "to", "reason"]),
        st.one_of(any_texts, st.integers(0, 10), st.booleans()), max_size=14))  # fmt: skip
    @settings(max_examples=500)
    def test_fuzz_any_frame_is_storable(self, verb, body) -> None:
        """Whatever a frame's fields hold, what parses holds only texts a store can write."""
        import json

        try:
            frame = v2.parse(f"{verb} {json.dumps(body)}")
        except FrameError:
            return
        self.assertTrue(stored_text_ok(frame))
