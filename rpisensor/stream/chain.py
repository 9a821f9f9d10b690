"""
A stream's hash chain: each entry's digest covers the digest before it, the
incarnation that wrote it and its own content. Two copies of a stream that
agree on the digest at seq N agree on every entry up to N; copies that went
apart (a Pi restored from an older SD image, two Pis cloned from one) differ
from the first entry each wrote on its own, even when the two wrote the same
values at the same moment, since each open of a journal is a new incarnation.

The sender computes it when an entry is committed and sends it with the
entry; a receiver stores it as it came. Resuming, the two compare digests (see
L{rpisensor.stream.matching}) instead of trusting that equal numbers mean
equal entries.
"""

from __future__ import annotations

from hashlib import blake2b

from rpisensor.entries import Entry, Gap

#: Hex digits of a digest: 64 bits, so two different histories agree by chance
#: about once in 10**19 comparisons.
DIGEST_LENGTH = 16


def link(previous: str, incarnation: str, entry: Entry) -> str:
    """The digest of C{entry}, following C{previous} (C{""} at a stream's start or where unknown)."""
    if entry.__class__ is Gap:
        content = f"gap|{entry.first}|{entry.last}|{entry.reason}"
    else:
        content = f"{entry.seq}|{entry.ts}|{entry.sensor}|{entry.value!r}|{entry.text}|{entry.unit or ''}"
    h = blake2b(digest_size=DIGEST_LENGTH // 2)
    h.update(f"{previous}|{incarnation}|{content}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()
