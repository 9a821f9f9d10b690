"""
What a receiver stores of a v2 stream: each reading with where it came from,
and each gap with its reason. The store's file formats write these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamReading:
    """
    One reading as stored: the stream's fields plus who sent it and when it arrived.

    @ivar identity: the client certificate's subject (its CN) when one was
        required, else C{None}.
    @ivar snapshot: the input's state when a live view subscribed (sent
        before the stream's new entries): shown, never stored.
    """

    device: str
    stream: str
    seq: int
    ts: str
    synced: bool
    sensor: str
    value: float | int
    unit: str | None
    text: str
    peer: str
    received: str
    identity: str | None = None
    snapshot: bool = False


@dataclass(frozen=True)
class StreamGap:
    """Entries C{first}..C{last} of a stream that will never arrive, and why."""

    device: str
    stream: str
    first: int
    last: int
    reason: str
    peer: str
    received: str
    identity: str | None = None


StreamRecord = StreamReading | StreamGap
