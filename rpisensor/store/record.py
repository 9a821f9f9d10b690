"""
One stored message: when it arrived, from whom, and its text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """One stored message."""

    time: str
    peer: str
    message: str
