"""
A reading's frame written out by hand (the sender's fast path) is the very
text the JSON encoder writes, for any reading: what the receiver's parser
and every older peer read stays the same.
"""

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.entries import Reading
from rpisensor.wire import v2

values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
texts = st.text(max_size=40)

readings = st.builds(
    Reading,
    sensor=texts,
    value=values,
    text=texts,
    unit=st.none() | texts,
    ts=texts,
    synced=st.booleans(),
    stream=texts,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    digest=st.sampled_from(["", "0123456789abcdef"]) | texts,
    snapshot=st.booleans(),
)


class ReadingEncodingTests(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(readings)
    def test_same_text_as_the_json_encoder(self, reading: Reading) -> None:
        """Byte for byte the JSON encoder's text; where it refuses (NaN, infinity), the same error."""
        value = reading.value
        if isinstance(value, float) and not math.isfinite(value):
            self.assertRaises(ValueError, v2.encode, reading)
            self.assertRaises(ValueError, v2._reading_by_json, reading)
            return
        text = v2.encode(reading)
        self.assertEqual(text, v2._reading_by_json(reading))
        verb, _, body = text.partition(" ")
        self.assertEqual(verb, "reading")
        self.assertEqual(json.loads(body)["text"], reading.text)

    def test_a_reading_as_a_collector_parses_it(self) -> None:
        """The written-out text round-trips through the parser's fast path."""
        reading = Reading(sensor="temp", value=21.5, text="21.50 °C", unit="°C", ts="2026-12-07T10:00:00.125Z",
                          synced=True, stream="abcdef0123456789", seq=7, digest="0123456789abcdef")  # fmt: skip
        text = v2.encode(reading)
        self.assertIsNotNone(v2._canonical_reading(text))
        self.assertEqual(v2.parse(text), reading)
