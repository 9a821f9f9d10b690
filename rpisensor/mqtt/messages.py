"""
What the Pi publishes, as pure functions.

The stream topic carries each entry of the outbox as one JSON object, so a
consumer can store every reading once (deduplicating on
C{(device, stream, seq)}: QoS 1 delivers at least once) and audit what is
missing (a gap says which entries will never come, and why); C{digest}, the
stream's hash chain through the entry, lets it check that it got the Pi's
own entries::

    {"kind": "reading", "device": "pi-kitchen-3f2a9c", "stream": "8f3a1c2e9b7d4a60",
     "seq": 406, "ts": "2026-12-01T19:33:25.123Z", "synced": true, "sensor": "room",
     "value": 22.562, "unit": "°C", "text": "22.56 °C", "digest": "..."}
    {"kind": "gap", "device": "pi-kitchen-3f2a9c", "stream": "8f3a1c2e9b7d4a60",
     "from": 407, "to": 900, "reason": "outbox full", "digest": "..."}

A collector's ack (C{collect --mqtt}, on the Pi's ack topic) names the
entries of one stream its database committed, as spans of seqs::

    {"stream": "8f3a1c2e9b7d4a60", "seqs": [[406, 452], [454, 454]]}

A state topic carries what Home Assistant expects: C{ON} or C{OFF} for an
input (active or not) and an output (driven on or off), the number for a
measurement.
"""

from __future__ import annotations

import json
import math

from rpisensor.entries import Gap, Reading

#: The most spans one ack carries (a collector splits a longer list over several acks).
MAX_ACK_SPANS = 1000

#: Home Assistant's default payloads of a binary_sensor and a switch.
ON, OFF = b"ON", b"OFF"


class MessageError(ValueError):
    """A stream message that is not one; the text says what is wrong."""


def stream_message(device: str, entry: Reading | Gap) -> bytes:
    """The stream topic's payload for one outbox entry."""
    if isinstance(entry, Gap):
        body = {"kind": "gap", "device": device, "stream": entry.stream,
                "from": entry.first, "to": entry.last, "reason": entry.reason}  # fmt: skip
    else:
        body = {"kind": "reading", "device": device, "stream": entry.stream, "seq": entry.seq,
                "ts": entry.ts, "synced": entry.synced, "sensor": entry.sensor, "value": entry.value,
                "unit": entry.unit, "text": entry.text}  # fmt: skip
    if entry.digest:
        body["digest"] = entry.digest
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def parse_stream_message(payload: bytes) -> tuple[str, Reading | Gap]:
    """
    A stream message back as C{(device, entry)}: for consumers of the stream
    topic (the tests, a collector).

    @raise MessageError: it is not a stream message; the text says why.
    """
    body = _json_object(payload)
    kind = body.get("kind")
    try:
        device, stream = _text(body, "device"), _text(body, "stream")
        if kind == "gap":
            first, last = _seq(body, "from"), _seq(body, "to")
            if last < first:
                raise MessageError(f"'to' ({last}) is before 'from' ({first})")
            return device, Gap(stream=stream, first=first, last=last, reason=_text(body, "reason"),
                               digest=_digest(body), device=device)  # fmt: skip
        if kind != "reading":
            raise MessageError(f"'kind' must be 'reading' or 'gap', got {kind!r}")
        value = body.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MessageError(f"'value' must be a number, got {value!r}")
        unit = body.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise MessageError(f"'unit' must be text or null, got {unit!r}")
        synced = body.get("synced")
        if not isinstance(synced, bool):
            raise MessageError(f"'synced' must be true or false, got {synced!r}")
        reading = Reading(stream=stream, seq=_seq(body, "seq"), ts=_text(body, "ts"), synced=synced,
                          sensor=_text(body, "sensor"), value=value, text=_text(body, "text"), unit=unit,
                          digest=_digest(body), device=device)  # fmt: skip
        return device, reading
    except KeyError as e:
        raise MessageError(f"{e.args[0]!r} is missing") from None


def ack_message(stream: str, spans: list[tuple[int, int]]) -> bytes:
    """A collector's ack of C{spans} (each C{(first, last)}) of C{stream}."""
    return json.dumps({"stream": stream, "seqs": [list(span) for span in spans]}, separators=(",", ":")).encode()


def parse_ack_message(payload: bytes) -> tuple[str, list[tuple[int, int]]]:
    """
    An ack back as C{(stream, spans)}.

    @raise MessageError: it is not an ack; the text says why.
    """
    body = _json_object(payload)
    try:
        stream = _text(body, "stream")
        seqs = body["seqs"]
    except KeyError as e:
        raise MessageError(f"{e.args[0]!r} is missing") from None
    if not isinstance(seqs, list) or len(seqs) > MAX_ACK_SPANS:
        raise MessageError(f"'seqs' must be a list of at most {MAX_ACK_SPANS} [first, last] pairs")
    spans = []
    for span in seqs:
        if not (isinstance(span, list) and len(span) == 2):
            raise MessageError(f"each of 'seqs' must be a [first, last] pair, got {span!r}"[:200])
        first, last = span
        for value in span:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MessageError(f"a seq must be a whole number from 1, got {value!r}"[:200])
        if last < first:
            raise MessageError(f"a span's last ({last}) is before its first ({first})")
        spans.append((first, last))
    return stream, spans



def _json_object(payload: bytes) -> dict:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise MessageError(f"not JSON: {e}") from None
    if not isinstance(body, dict):
        raise MessageError("not a JSON object")
    return body


def _text(body: dict, key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise MessageError(f"{key!r} must be text, got {value!r}")
    return value


def _digest(body: dict) -> str:
    digest = body.get("digest", "")
    if not isinstance(digest, str):
        raise MessageError(f"'digest' must be text, got {digest!r}")
    return digest


def _seq(body: dict, key: str) -> int:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MessageError(f"{key!r} must be a whole number from 1, got {value!r}")
    return value


def binary_state(value: float | int) -> bytes:
    """An input's or an output's state: C{ON} when active (driven on, or any PWM duty), else C{OFF}."""
    return ON if value > 0 else OFF


def measurement_state(value: float | int) -> bytes:
    """A measurement's state: its number, as Home Assistant's sensor reads it."""
    return repr(value).encode() if isinstance(value, float) else str(value).encode()


def command_level(payload: bytes) -> bool | None:
    """A switch command: C{True} for C{ON}, C{False} for C{OFF}, C{None} for anything else."""
    text = payload.strip().upper()
    if text == ON:
        return True
    if text == OFF:
        return False
    return None
