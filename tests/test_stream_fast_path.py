"""
A receiving link's fast path for readings (L{StreamLink.message} handing a
reading written as senders write it straight to L{Receiver.receive_reading})
against the general path (every frame through L{v2.parse} and
L{Receiver.receive}): for any frames, held and flushed in any way, both store
the same entries in the same batches, send the same frames, report the same
problems and close the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.entries import Gap, Reading
from rpisensor.stream.link import StreamLink
from rpisensor.stream.receiver import Receiver, StreamRegistry
from rpisensor.wire import v2

STREAM = "s1"
TS = "2026-12-01T19:33:25.123Z"


def reading_text(stream: str, seq: int, value, text: str, digest: str, snapshot: bool) -> str:
    return v2.encode(Reading(sensor="button", value=value, text=text, ts=TS, synced=True, stream=stream, seq=seq,
                             digest=digest, snapshot=snapshot))  # fmt: skip


readings = st.builds(
    reading_text,
    st.sampled_from([STREAM, STREAM, "s2"]),
    st.one_of(st.integers(1, 5), st.integers(0, 10)),
    st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3, allow_nan=False)),
    st.one_of(st.just("Button pressed"), st.text(max_size=8)),
    st.sampled_from(["", "0123456789abcdef"]),
    st.booleans(),
)


@st.composite
def respelled(draw) -> str:
    """A reading the general parser takes but not as senders write it: its keys in another order, spaces."""
    body = json.loads(draw(readings).split(" ", 1)[1])
    keys = draw(st.permutations(list(body)))
    return "reading " + json.dumps({key: body[key] for key in keys}, separators=(", ", ": "))


@st.composite
def spliced(draw) -> str:
    """A reading with any part of its text replaced: a malformed one, mostly."""
    text = draw(readings)
    start, length = draw(st.integers(0, len(text))), draw(st.integers(0, 12))
    return text[:start] + draw(st.text(max_size=3)) + text[start + length :]


others = st.one_of(
    st.builds(lambda a, n: v2.encode(Gap(stream=STREAM, first=a, last=a + n, reason="outbox full")),
              st.integers(1, 10), st.integers(0, 4)),  # fmt: skip
    st.builds(lambda seq: v2.encode(v2.Last(seq)), st.integers(0, 12)),
    st.builds(lambda seq: v2.encode(v2.Probe(seq)), st.integers(0, 10)),
    st.just(v2.encode(v2.Heartbeat())),
    st.just(v2.encode(v2.Ack(1))),
    st.just("error: the reporter is unhappy"),
    st.just("reading {"),
    st.text(max_size=12),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("message"), readings),
        st.tuples(st.just("message"), st.one_of(respelled(), spliced(), others)),
        st.just(("hold",)),
        st.just(("flush",)),
        st.just(("stored",)),
        st.just(("lost",)),
    ),
    max_size=40,
)


class Side:
    """One receiving link over a store the test completes, with everything it did written down in order."""

    def __init__(self, fast: bool, accepted: int, announced: int | None) -> None:
        self.clock = Clock()
        self.did: list = []
        self.waiting: list[Deferred] = []
        self.stamps = 0
        registry = StreamRegistry()
        state = registry.begin("pi", STREAM, accepted)
        self.link = StreamLink(
            lambda text: self.did.append(("sent", text)), self.clock, None, None,
            lambda what: self.did.append(("problem", what)), lambda text: self.did.append(("error", text)),
        )  # fmt: skip
        self.receiver = Receiver(
            registry, state, self._store, lambda text: self.did.append(("sent", text)),
            lambda reason: self.did.append(("closed", reason)), self.clock, self._stamp, "192.0.2.7:40000",
            announced=announced, identity="pi",
        )  # fmt: skip
        self.link.attach(self.receiver)
        if not fast:
            self.link._receiver = None  # every frame the general way, as for any other side

    def _stamp(self) -> str:
        self.stamps += 1
        return f"2026-12-07T08:00:{self.stamps:02d}.000Z"

    def _store(self, entries):
        self.did.append(("stored", [(type(e).__name__, asdict(e)) for e in entries]))  # (as they are now)
        d = Deferred()
        self.waiting.append(d)
        return d

    def step(self, step) -> None:
        kind = step[0]
        if kind == "message":
            self.link.message(step[1])
        elif kind == "hold":
            self.receiver.hold()
        elif kind == "flush":
            self.receiver.flush()
        elif kind == "stored":
            waiting, self.waiting = self.waiting, []
            for d in waiting:
                d.callback(None)
            self.clock.advance(0)
        elif kind == "lost":
            self.link.stop()

    def outcome(self) -> tuple:
        r = self.receiver
        return (self.did, r.state.accepted, r.state.stored, r.state.digest, r.received, r.duplicates, r.closed,
                self.stamps)  # fmt: skip


class FastPathProperty(SynchronousTestCase):
    @given(steps, st.integers(0, 3), st.one_of(st.none(), st.integers(0, 12)))
    @settings(max_examples=500, deadline=None)
    def test_same_as_the_general_path(self, steps, accepted, announced) -> None:
        """Any frames, holds, flushes, store completions and a loss: the fast path does what the general one does."""
        fast, general = Side(True, accepted, announced), Side(False, accepted, announced)
        for step in steps:
            fast.step(step)
            general.step(step)
        fast.step(("flush",))
        general.step(("flush",))
        self.assertEqual(fast.outcome(), general.outcome())

    def test_the_fast_path_is_taken(self) -> None:
        """A reading as senders write it, the next of the stream, does not go through the general parser."""
        side = Side(True, 0, None)
        parsed = []
        original = v2.parse
        self.patch(v2, "parse", lambda text: parsed.append(text) or original(text))
        side.step(("message", reading_text(STREAM, 1, 1, "Button pressed", "", False)))
        side.step(("message", reading_text(STREAM, 1, 1, "Button pressed", "", False)))  # a duplicate: general
        self.assertEqual(len(parsed), 0)  # (receive_reading's fallback takes the parsed reading as it is)
        self.assertEqual(side.receiver.state.accepted, 1)
        self.assertEqual(side.receiver.duplicates, 1)
