"""
What the store keeps: a v1 message (when it arrived, from whom, its text),
or a v2 stream's reading or gap (L{rpisensor.stream.records}).
"""

from __future__ import annotations

from dataclasses import dataclass

from rpisensor.entries import Gap, Reading


@dataclass(frozen=True)
class Record:
    """One stored v1 message."""

    time: str
    peer: str
    message: str


#: Anything the store writes.
StoredRecord = Record | Reading | Gap

#: The highest seq stored of each stream, by (device, stream): every entry up
#: to it is in the store (a gap record standing for the ones that were lost).
HighWaters = dict[tuple[str, str], int]


@dataclass(frozen=True)
class Standing:
    """
    Where one stream stands in a store: every entry up to C{stored} is in it;
    C{digest} is the chain's digest through C{stored} (C{None} where unknown:
    nothing stored, or entries of an older version); C{owner} is who may send
    it (see L{rpisensor.stream.receiver}), C{None} until someone claimed it.
    """

    stored: int = 0
    digest: str | None = None
    owner: str | None = None


#: An entry as a store answers for a probe: its first and last seq, and its digest.
Span = tuple[int, int, "str | None"]


