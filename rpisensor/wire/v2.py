"""
Protocol v2, the event streams: each frame is C{VERB} or C{VERB {JSON object}},
still one UTF-8 message ended by NUL (JSON escapes U+0000, so a frame never
holds a raw NUL).

Pure functions and frozen dataclasses: L{parse} turns a message's text into a
frame or raises L{FrameError} saying what is wrong; L{encode} is its inverse.
The protocol reference (docs/reference/protocol.md) documents every frame with an example.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone

from rpisensor.entries import Gap, Reading
from rpisensor.wire.framing import MessageError

VERSION = 2

#: Longest device or stream id, and the characters they may hold.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
#: The largest sequence number: a reading a millisecond for 290,000 years.
MAX_SEQ = 2**63 - 1
#: Sensor names as inputs have them (Python identifiers), bounded.
_SENSOR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
#: Half of a UTF-16 pair: JSON's escapes can spell one (C{"\\ud800"}), but it is no
#: character, so UTF-8 cannot carry it and no store can hold it.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: A stream's hash chain digest (L{rpisensor.stream.chain}), an owner's secret, an incarnation.
_DIGEST = re.compile(r"[0-9a-f]{16}\Z")
_OWNER = re.compile(r"[0-9a-f]{16,64}\Z")
_INCARNATION = re.compile(r"[0-9a-f]{1,16}\Z")


class FrameError(MessageError):
    """A v2 frame is malformed; the message says what is wrong."""


# -- the frames ------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """The client's first frame: which version, who it is, what it sends or wants."""

    role: str  # "report" or "subscribe"
    device: str | None = None
    stream: str | None = None
    heartbeat: float | None = None
    #: report: the last seq the sender holds now, so the receiver can say what a replay brings
    #: (and refuse a gap beyond it).
    last: int | None = None
    #: report: the stream's owner secret (made with the outbox): the stream belongs to the
    #: first sender that claimed it, and a stranger naming it is refused.
    owner: str | None = None
    #: report: this open of the sender's journal (each restart is a new one).
    incarnation: str | None = None


@dataclass(frozen=True)
class Welcome:
    """The server's answer to L{Hello}."""

    acked: int | None = None  # collect: the last seq it has stored of that stream
    device: str | None = None  # serve: whose stream, which one, what it holds
    stream: str | None = None
    first: int | None = None
    last: int | None = None
    heartbeat: float | None = None
    #: collect: the digest of the chain through C{acked}, for the sender to compare with its own.
    digest: str | None = None
    #: serve: its stream's owner secret and incarnation, as a reporter's hello has them.
    owner: str | None = None
    incarnation: str | None = None


@dataclass(frozen=True)
class Refused:
    """
    A v2 server will not take this hello (not this client's stream, not this
    server's role): the client backs off and says why; it is no sign of a v1 peer.
    """

    reason: str


@dataclass(frozen=True)
class Last:
    """
    The sender holds entries up to C{seq} now: it raises the C{last} its hello
    announced, before a gap that reaches beyond it (entries dropped since the
    hello: an outbox that overflowed, a disk that was full).
    """

    seq: int


@dataclass(frozen=True)
class Probe:
    """The sender asks: which entry of yours covers C{seq}, and what is the chain's digest through it?"""

    seq: int


@dataclass(frozen=True)
class Match:
    """
    The receiver's answer to a L{Probe}: the entry covering C{seq} ends at
    C{last}, and C{digest} is the chain through it; both C{None} when it
    holds no entry there (or cannot tell).
    """

    seq: int
    last: int | None = None
    digest: str | None = None


@dataclass(frozen=True)
class Ack:
    """Every entry up to C{seq} is durably stored (cumulative)."""

    seq: int


@dataclass(frozen=True)
class Subscribe:
    """Send entries after C{after} (of the welcome's stream), or a snapshot and then live."""

    after: int | None = None
    #: The subscriber's digest of the chain through C{after}, for the server to compare.
    digest: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    """Nothing to say; the link is alive."""


#: A reading and a gap are the entries themselves (L{rpisensor.entries}): one type from the
#: sampler to the store. On the wire a reading carries C{stream, seq, ts, synced, sensor,
#: value, text} (and C{unit}, C{d}: its digest, C{snapshot}, where they apply); a gap
#: C{stream, from, to, reason} (and C{d}).
Frame = Hello | Welcome | Refused | Reading | Gap | Last | Ack | Probe | Match | Subscribe | Heartbeat

#: Verbs of v2 frames: a v1 peer never sends a message starting with one of these.
VERBS = ("hello", "welcome", "refused", "reading", "gap", "last", "ack", "probe", "match", "subscribe", "heartbeat")


# -- encoding -------------------------------------------------------------------


def _compact(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


#: JSON's text for one string, as C{json.dumps(..., ensure_ascii=False)} writes it (in C).
_string = json.encoder.encode_basestring


def _encode_reading(frame: Reading) -> str:
    """
    L{encode} of a reading, written out: the same text as the JSON encoder's
    (a test compares them), for a third of the time. A replay writes each
    reading of an outbox this way, so this is the sender's one busy line.
    """
    value = frame.value
    kind = value.__class__
    if kind is int:
        number = int.__repr__(value)
    elif kind is float and math.isfinite(value):
        number = float.__repr__(value)
    else:  # (a bool, a NaN, anything else: the encoder's own words for it, or its error)
        return _reading_by_json(frame)
    text = (
        f'reading {{"stream":{_string(frame.stream)},"seq":{frame.seq},"ts":{_string(frame.ts)},'
        f'"synced":{"true" if frame.synced else "false"},"sensor":{_string(frame.sensor)},'
        f'"value":{number},"text":{_string(frame.text)}'
    )
    if frame.unit is not None:
        text += ',"unit":' + _string(frame.unit)
    if frame.digest:
        text += ',"d":' + _string(frame.digest)
    if frame.snapshot:
        text += ',"snapshot":true'
    return text + "}"


def _reading_by_json(frame: Reading) -> str:
    body = {
        "stream": frame.stream, "seq": frame.seq, "ts": frame.ts, "synced": frame.synced,
        "sensor": frame.sensor, "value": frame.value, "text": frame.text,
    }  # fmt: skip
    if frame.unit is not None:
        body["unit"] = frame.unit
    if frame.digest:
        body["d"] = frame.digest
    if frame.snapshot:
        body["snapshot"] = True
    return "reading " + _compact(body)


def encode(frame: Frame) -> str:
    """The text of one v2 message (without its NUL)."""
    if frame.__class__ is Reading:
        return _encode_reading(frame)
    if isinstance(frame, Heartbeat):
        return "heartbeat"
    if isinstance(frame, Reading):  # (a subclass)
        return _encode_reading(frame)
    if isinstance(frame, Gap):
        body = {"stream": frame.stream, "from": frame.first, "to": frame.last, "reason": frame.reason}
        if frame.digest:
            body["d"] = frame.digest
        return "gap " + _compact(body)
    if isinstance(frame, Ack):
        return "ack " + _compact({"seq": frame.seq})
    if isinstance(frame, Subscribe):
        return "subscribe " + _compact(_present({"after": frame.after, "d": frame.digest}))
    if isinstance(frame, Probe):
        return "probe " + _compact({"seq": frame.seq})
    if isinstance(frame, Last):
        return "last " + _compact({"seq": frame.seq})
    if isinstance(frame, Match):
        return "match " + _compact(_present({"seq": frame.seq, "to": frame.last, "d": frame.digest}))
    if isinstance(frame, Refused):
        return "refused " + _compact({"reason": frame.reason})
    if isinstance(frame, Hello):
        fields = ("device", "stream", "heartbeat", "last", "owner", "incarnation")
        body = {"v": VERSION, "role": frame.role, **_present({name: getattr(frame, name) for name in fields})}
        return "hello " + _compact(body)
    if isinstance(frame, Welcome):
        fields = ("acked", "device", "stream", "first", "last", "heartbeat")
        body = {"v": VERSION, **_present({name: getattr(frame, name) for name in fields})}
        body.update(_present({"d": frame.digest, "owner": frame.owner, "incarnation": frame.incarnation}))
        return "welcome " + _compact(body)
    raise TypeError(f"not a v2 frame: {frame!r}")


def _present(fields: dict) -> dict:
    """C{fields} without those that are C{None}."""
    return {name: value for name, value in fields.items() if value is not None}


# -- parsing ----------------------------------------------------------------------


def is_v2(text: str) -> bool:
    """Whether C{text} starts with a v2 verb (a v2 frame, well-formed or not)."""
    verb = text.split(" ", 1)[0]
    return verb in VERBS


def parse(text: str) -> Frame:
    """
    The frame in one message's text.

    @raise FrameError: not a v2 frame, or a field is missing, of the wrong
        type or out of range; the message names it.
    """
    if text.startswith("reading {"):
        reading = _canonical_reading(text)
        if reading is not None:
            return reading
    return _parse_any(text)


def _parse_any(text: str) -> Frame:
    """L{parse} for every frame, by way of the JSON decoder and the field checks."""
    verb, _, rest = text.partition(" ")
    if verb == "heartbeat":
        if rest.strip():
            raise FrameError("heartbeat takes nothing after it")
        return Heartbeat()
    if verb not in VERBS:
        raise FrameError(f"unknown frame {verb[:32]!r}; v2 frames are: {', '.join(VERBS)}")
    body = _object(verb, rest)
    return _PARSERS[verb](_Fields(verb, body))


def _object(verb: str, rest: str) -> dict:
    if not rest.strip():
        if verb == "subscribe":
            return {}
        raise FrameError(f"{verb} needs a JSON object after it")
    try:
        body = _DECODER.decode(rest)
    except (ValueError, RecursionError) as e:
        raise FrameError(f"{verb}: the text after it is not JSON ({_short(e)})") from None
    if not isinstance(body, dict):
        raise FrameError(f"{verb}: expected a JSON object {{...}}, got {type(body).__name__}")
    return body


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


# One decoder for every frame: json.loads with an argument builds a new one
# each call, which is a fifth of a reading's parse.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _short(error: Exception) -> str:
    return str(error).split(":")[0][:80]


class _Fields:
    """Typed access to a frame's JSON fields, with errors that name the field."""

    def __init__(self, verb: str, body: dict) -> None:
        self.verb = verb
        self.body = body

    def _fail(self, name: str, what: str) -> FrameError:
        return FrameError(f"{self.verb}: {name!r} must be {what}")

    def _get(self, name: str, required: bool):
        if name not in self.body or self.body[name] is None:
            if required:
                raise FrameError(f"{self.verb}: {name!r} is missing")
            return None
        return self.body[name]

    def seq(self, name: str, required: bool = True) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
            raise self._fail(name, f"a whole number from 0 to {MAX_SEQ}")
        return value

    def ident(self, name: str, required: bool = True) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not _ID.match(value):
            raise self._fail(name, "1 to 64 letters, digits, '.', '_', ':' or '-'")
        return value

    def text(self, name: str, required: bool = True, limit: int = 1024) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise self._fail(name, f"text of at most {limit} characters")
        if not value.isascii():
            surrogate = _SURROGATE.search(value)
            if surrogate is not None:
                raise FrameError(
                    f"{self.verb}: {name!r} holds \\u{ord(surrogate.group()):04x}, half of a UTF-16 pair, which is "
                    "not a character and cannot be stored; send the character itself (or both halves)"
                )
        return value

    def seconds(self, name: str) -> float | None:
        value = self._get(name, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= 3600:
            raise self._fail(name, "a number of seconds from 0.1 to 3600")
        return float(value)

    def pattern(self, name: str, pattern: re.Pattern, what: str) -> str | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.match(value):
            raise self._fail(name, what)
        return value

    def digest(self) -> str | None:
        return self.pattern("d", _DIGEST, "16 lowercase hex digits (a digest)")

    def flag(self, name: str, required: bool = True) -> bool:
        value = self._get(name, required)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._fail(name, "true or false")
        return value

    def version(self) -> None:
        value = self._get("v", True)
        if value != VERSION:
            raise FrameError(f"{self.verb}: this peer speaks version {VERSION}, not {value!r}")


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 UTC timestamp as the frames carry it, e.g. C{2026-12-01T19:33:25.123Z}."""
    if not text.endswith("Z"):
        raise ValueError("not UTC (no Z)")
    moment = datetime.fromisoformat(text[:-1] + "+00:00")
    if moment.utcoffset() is None:  # pragma: no cover - the suffix above sets it
        raise ValueError("no time zone")
    return moment


def format_timestamp(seconds: float) -> str:
    """Epoch seconds as the frames' timestamp: ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hello(f: _Fields) -> Hello:
    f.version()
    role = f.text("role")
    if role not in ("report", "subscribe"):
        raise FrameError(f"hello: 'role' must be 'report' or 'subscribe', got {role[:32]!r}")
    required = role == "report"
    return Hello(
        role, f.ident("device", required), f.ident("stream", required), f.seconds("heartbeat"),
        f.seq("last", False),
        owner=f.pattern("owner", _OWNER, "16 to 64 lowercase hex digits (the stream's owner secret)"),
        incarnation=f.pattern("incarnation", _INCARNATION, "1 to 16 lowercase hex digits"),
    )  # fmt: skip


def _welcome(f: _Fields) -> Welcome:
    f.version()
    return Welcome(
        acked=f.seq("acked", False),
        device=f.ident("device", False),
        stream=f.ident("stream", False),
        first=f.seq("first", False),
        last=f.seq("last", False),
        heartbeat=f.seconds("heartbeat"),
        digest=f.digest(),
        owner=f.pattern("owner", _OWNER, "16 to 64 lowercase hex digits (the stream's owner secret)"),
        incarnation=f.pattern("incarnation", _INCARNATION, "1 to 16 lowercase hex digits"),
    )


def _refused(f: _Fields) -> Refused:
    return Refused(f.text("reason", limit=300))


def _last(f: _Fields) -> Last:
    return Last(f.seq("seq"))


def _probe(f: _Fields) -> Probe:
    return Probe(f.seq("seq"))


def _match(f: _Fields) -> Match:
    return Match(f.seq("seq"), f.seq("to", False), f.digest())


def _reading(f: _Fields) -> Reading:
    stream, seq = f.ident("stream"), f.seq("seq")
    ts = f.text("ts", limit=40)
    try:
        parse_timestamp(ts)
    except ValueError:
        raise FrameError(f"reading: 'ts' must be ISO 8601 UTC like 2026-12-01T19:33:25.123Z, got {ts!r}") from None
    synced = f.flag("synced")
    sensor = f.text("sensor", limit=64)
    if not _SENSOR.match(sensor):
        raise FrameError(f"reading: 'sensor' must be a name like button or door_2, got {sensor!r}")
    value = f.body.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FrameError("reading: 'value' must be a finite number")
    if isinstance(value, int) and not -MAX_SEQ <= value <= MAX_SEQ:  # (what SQLite's INTEGER holds)
        raise FrameError(f"reading: 'value' must be a finite number; whole ones from -{MAX_SEQ} to {MAX_SEQ}")
    if not math.isfinite(value):
        raise FrameError("reading: 'value' must be a finite number")
    return Reading(
        stream=stream, seq=seq, ts=ts, synced=synced, sensor=sensor, value=value,
        text=f.text("text"),
        unit=f.text("unit", False, limit=16),
        digest=f.digest() or "",
        snapshot=f.flag("snapshot", False),
    )  # fmt: skip


# A reading exactly as L{encode} writes it, its texts without escapes: most
# of what a collector receives (a replay brings tens of thousands a second).
# Each group is as strict as the field checks of L{_reading}, or stricter;
# whatever does not match takes the general path, so the result (or the
# error) is always the same.
_TEXT = r'([^"\\\x00-\x1f\ud800-\udfff]{0,%d})'
_CANONICAL_READING = re.compile(
    r'reading \{"stream":"([A-Za-z0-9][A-Za-z0-9._:-]{0,63})","seq":(0|[1-9][0-9]{0,18}),'
    r'"ts":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})\.[0-9]{3}Z","synced":(true|false),'
    r'"sensor":"([A-Za-z_][A-Za-z0-9_]{0,63})","value":(-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?),'
    r'"text":"' + _TEXT % 1024 + '"(?:,"unit":"' + _TEXT % 16 + r'")?(?:,"d":"([0-9a-f]{16})")?'
    r'(,"snapshot":true)?\}\Z'
)


@lru_cache(maxsize=64)
def _valid_second(text: str) -> bool:
    """Whether C{YYYY-MM-DDTHH:MM:SS} is a real moment (readings of one second share it)."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _canonical_reading(text: str) -> Reading | None:
    """The reading in C{text} if it is written as L{encode} writes one (see above), else C{None}."""
    match = _CANONICAL_READING.match(text)
    if match is None:
        return None
    stream, seq, second, synced, sensor, value, body, unit, digest, snapshot = match.groups()
    seq = int(seq)
    if seq > MAX_SEQ or not _valid_second(second):
        return None
    if "." in value or "e" in value or "E" in value:
        value = float(value)  # as the JSON decoder reads it
        if not math.isfinite(value):
            return None
    else:
        value = int(value)  # at most 18 digits: within what SQLite's INTEGER holds
    end = match.end(3)
    ts = second + text[end : end + 5]  # and its ".123Z"
    return Reading(
        stream=stream, seq=seq, ts=ts, synced=synced == "true", sensor=sensor, value=value, text=body, unit=unit,
        digest=digest or "", snapshot=snapshot is not None,
    )


def _gap(f: _Fields) -> Gap:
    first, last = f.seq("from"), f.seq("to")
    if first > last:
        raise FrameError(f"gap: 'from' ({first}) is after 'to' ({last})")
    return Gap(
        stream=f.ident("stream"), first=first, last=last, reason=f.text("reason", limit=200), digest=f.digest() or ""
    )


def _ack(f: _Fields) -> Ack:
    return Ack(f.seq("seq"))


def _subscribe(f: _Fields) -> Subscribe:
    return Subscribe(f.seq("after", False), f.digest())


_PARSERS = {
    "hello": _hello,
    "welcome": _welcome,
    "reading": _reading,
    "gap": _gap,
    "ack": _ack,
    "subscribe": _subscribe,
    "refused": _refused,
    "probe": _probe,
    "last": _last,
    "match": _match,
}


__all__ = [
    "Ack", "Frame", "FrameError", "Gap", "Heartbeat", "Hello", "Last", "MAX_SEQ", "Match", "Probe", "Reading", "Refused",
    "Subscribe", "VERBS", "VERSION", "Welcome", "encode", "format_timestamp", "is_v2", "parse", "parse_timestamp",
]  # fmt: skip
