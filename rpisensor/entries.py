"""
The one shape of what a stream carries, from the sampler to the store and the page: a
L{Reading} (one value of one input or sensor) or a L{Gap} (entries that will never come,
and why). Together, an L{Entry}.

An entry's fields are filled in as it travels: the sampler gives what was read and when
(C{sensor}, C{value}, C{text}, C{unit}, C{ts}, C{synced}); the journal its place in the
stream (C{stream}, C{seq}, C{digest}); the receiver who sent it and when it came
(C{device}, C{peer}, C{received}, C{identity}). Each step fills in its own fields on the
entry it was handed, and hands it on; after that nobody changes it. (They are slotted
dataclasses, not frozen ones, on purpose: a catch-up makes tens of thousands a second, and
a frozen dataclass costs four times as much to make, a copy with C{dataclasses.replace}
more again.)

Pure data: no Twisted, no I/O, so the wire format, the stores, tools and tests share it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, kw_only=True)
class Reading:
    """
    One reading of one input or sensor.

    @ivar sensor: the input's or sensor's name, e.g. C{button}.
    @ivar value: machine-readable: 1/0 for a digital input (1: active), a number for a measurement.
    @ivar text: what the tutorial's protocol sends for it, e.g. C{"Button pressed"}, C{"22.56 °C"}.
    @ivar unit: a measurement's unit, e.g. C{°C}; C{None} for a digital input.
    @ivar ts: when the Pi took it: ISO 8601 UTC with milliseconds (wall time).
    @ivar synced: whether the Pi's clock was synchronised (NTP) then.
    @ivar stream: the stream it is an entry of, and C{seq} its place there (from 1).
    @ivar digest: the stream's hash chain through this entry (see
        L{rpisensor.stream.chain}); empty where unknown (an entry sent by an older version).
    @ivar device: the Pi it comes from.
    @ivar peer: where the receiver got it from (C{host:port}), C{received} when (ISO 8601 UTC).
    @ivar identity: the client certificate's CN, when the receiver required one.
    @ivar snapshot: the input's state when a live view subscribed: shown, never stored.
    """

    sensor: str
    value: float | int
    text: str
    unit: str | None = None
    ts: str = ""
    synced: bool = False
    stream: str = ""
    seq: int = 0
    digest: str = ""
    device: str = ""
    peer: str = ""
    received: str = ""
    identity: str | None = None
    snapshot: bool = False

    @property
    def first(self) -> int:
        """The first seq this entry stands for: its own."""
        return self.seq

    @property
    def last(self) -> int:
        """The last seq this entry stands for: its own."""
        return self.seq


@dataclass(slots=True, kw_only=True)
class Gap:
    """
    Entries C{first}..C{last} of C{stream} will never arrive, and C{reason} says why
    (naming who lost them: the Pi's outbox overflowed, the Pi lost power, a journal trimmed
    them, a receiver lost what it had stored). The other fields are as a L{Reading}'s.
    """

    stream: str
    first: int
    last: int
    reason: str
    digest: str = ""
    device: str = ""
    peer: str = ""
    received: str = ""
    identity: str | None = None

    @property
    def seq(self) -> int:
        """Where the gap starts: its place among the stream's entries."""
        return self.first


#: Anything a stream carries.
Entry = Reading | Gap
