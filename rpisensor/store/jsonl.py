"""
The JSON Lines store: one JSON object a line, appended. A v1 message is
C{{"time", "peer", "message"}}, as always; a v2 stream's entries carry a
C{kind} first: C{{"kind": "reading", "device", "stream", "seq", ...}} and
C{{"kind": "gap", "device", "stream", "from", "to", "reason", ...}}; who
owns a stream is one C{{"kind": "stream", "device", "stream", "owner",
"claimed"}} line, written when the stream is first claimed.

Blocking: used only from the store's writer thread (see L{rpisensor.store.writer}).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from twisted.logger import Logger

from rpisensor.store.record import HighWaters, Record, Span, Standing, StoredRecord
from rpisensor.entries import Gap, Reading


def reading_object(r: Reading) -> dict:
    """A stored reading as its JSON object, C{kind} first."""
    return {
        "kind": "reading", "device": r.device, "stream": r.stream, "seq": r.seq, "ts": r.ts,
        "synced": r.synced, "sensor": r.sensor, "value": r.value, "unit": r.unit, "text": r.text,
        "peer": r.peer, "received": r.received, "identity": r.identity, "digest": r.digest or None,
    }  # fmt: skip


def gap_object(g: Gap) -> dict:
    """A stored gap as its JSON object, C{kind} first."""
    return {
        "kind": "gap", "device": g.device, "stream": g.stream, "from": g.first, "to": g.last,
        "reason": g.reason, "peer": g.peer, "received": g.received, "identity": g.identity,
        "digest": g.digest or None,
    }  # fmt: skip


def record_object(record: StoredRecord) -> dict:
    if isinstance(record, Reading):
        return reading_object(record)
    if isinstance(record, Gap):
        return gap_object(record)
    return {"time": record.time, "peer": record.peer, "message": record.message}


class JsonLinesFile:
    """
    Appends records to a JSON Lines file. Each batch is flushed and fsynced
    before L{write} returns, so what the writer reports as written survives a
    crash or a power cut; a stream entry at or below its stream's high-water
    mark is already in the file and is not written again.

    @ivar high_waters: the highest seq in the file of each stream, found by
        a scan when the file is opened and kept up to date by L{write}.
    @ivar torn: bytes of an incomplete last line removed at the open (a
        write cut short by a crash: never acknowledged, so sent again).
    @ivar unreadable: lines the scan could not read (edited by hand?), left as they are.
    """

    _log = Logger()

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._size = 0
        self.high_waters: HighWaters = {}
        #: The digest of each stream's last entry, and each stream's owner.
        self._digests: dict[tuple[str, str], str | None] = {}
        self._owners: dict[tuple[str, str], str] = {}
        self.torn = 0
        self.unreadable = 0

    def open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            self._size = self._scan(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _scan(self, fd: int) -> int:
        """Rebuild the high-water marks; cut off an incomplete last line. Returns the size."""
        end = 0
        with open(fd, "rb", closefd=False) as file:
            for line in file:
                if not line.endswith(b"\n"):
                    break
                end += len(line)
                if b'"kind"' in line:
                    self._note(line)
        size = os.fstat(fd).st_size
        if size > end:
            self.torn = size - end
            os.ftruncate(fd, end)
            os.fsync(fd)
            self._log.warn(
                "The store {path} ended in the middle of a line ({count} bytes, a write cut short "
                "when the collector stopped abruptly); removed it. Nothing acknowledged is lost: "
                "senders send again what was not acknowledged.",
                path=str(self.path), count=self.torn,
            )  # fmt: skip
        if self.unreadable:
            self._log.warn(
                "The store {path} has {count} lines that are not records (edited by hand?); they "
                "are left as they are.",
                path=str(self.path), count=self.unreadable,
            )  # fmt: skip
        return end

    def _note(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
            kind = obj["kind"]
            key = (obj["device"], obj["stream"])
            if kind == "stream":
                self._owners.setdefault(key, obj["owner"])
                return
            last = obj["seq"] if kind == "reading" else obj["to"] if kind == "gap" else None
        except (ValueError, KeyError, TypeError):
            self.unreadable += 1
            return
        if isinstance(last, int) and isinstance(key[0], str) and isinstance(key[1], str):
            if last > self.high_waters.get(key, 0):
                self.high_waters[key] = last
                self._digests[key] = obj.get("digest")
        else:
            self.unreadable += 1

    def write(self, records: Sequence[StoredRecord]) -> None:
        """
        Append C{records} (but stream entries the file has) and fsync. A
        write that fails is cut off again, so the file never holds half a
        batch: the senders send it again.
        """
        lines = []
        marks: HighWaters = {}
        digests: dict[tuple[str, str], str | None] = {}
        high_waters = self.high_waters
        for record in records:
            if not isinstance(record, Record):
                key = (record.device, record.stream)
                last = record.last
                if last <= marks.get(key, high_waters.get(key, 0)):
                    continue  # already in the file (as an SQLite store's unique key would say)
                marks[key] = last
                digests[key] = record.digest or None
            lines.append(json.dumps(record_object(record), ensure_ascii=False) + "\n")
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        try:
            self._append(data)
        except BaseException:
            self._cut_back()
            raise
        self._size += len(data)
        high_waters.update(marks)
        self._digests.update(digests)

    def _append(self, data: bytes) -> None:
        # Straight to the file descriptor, not through Python's buffer: a
        # failed write must leave nothing behind to be flushed later.
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            pass  # the disk refuses even that: the next open cuts off the incomplete line

    def position(self, device: str, stream: str) -> int:
        """The highest seq of C{(device, stream)} in the file (0: none)."""
        return self.high_waters.get((device, stream), 0)

    def standing(self, device: str, stream: str) -> Standing:
        """Where C{(device, stream)} stands in the file now (see L{Standing}), from memory."""
        key = (device, stream)
        return Standing(self.high_waters.get(key, 0), self._digests.get(key), self._owners.get(key))

    def entry(self, device: str, stream: str, seq: int) -> Span | None:
        """
        The entry of C{(device, stream)} covering C{seq}: C{(first, last,
        digest)}, or C{None}. A JSON Lines file has no index: this reads it
        from the start (asked only when a sender's copy of a stream went
        apart from the store's; an SQLite store answers at once).
        """
        found = None
        with open(self.path, "rb") as file:
            for line in file:
                if b'"kind"' not in line or stream.encode() not in line:
                    continue
                try:
                    obj = json.loads(line)
                    if obj.get("device") != device or obj.get("stream") != stream:
                        continue
                    span = (obj["seq"], obj["seq"]) if obj["kind"] == "reading" else (obj["from"], obj["to"])
                except (ValueError, KeyError, TypeError):
                    continue
                if span[0] <= seq <= span[1]:
                    found = (span[0], span[1], obj.get("digest"))  # (the last one written wins)
        return found

    def claim(self, device: str, stream: str, owner: str, when: str) -> str:
        """Record C{owner} as C{(device, stream)}'s, unless it has one; return the one it has now."""
        key = (device, stream)
        if key not in self._owners:
            line = {"kind": "stream", "device": device, "stream": stream, "owner": owner, "claimed": when}
            data = (json.dumps(line) + "\n").encode()
            try:
                self._append(data)
            except BaseException:
                self._cut_back()
                raise
            self._size += len(data)
            self._owners[key] = owner
        return self._owners[key]

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
