"""
Finding where a role listens, and what a collector (or a subscriber) stored.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred


def listening_port(service) -> Deferred:
    """
    Fires with the port of the first listener in C{service} (a service built by
    C{build_server_service} or C{build_collect_service}) once it listens; give
    such a service C{tcp:0:interface=127.0.0.1} to get a free port.
    """
    from rpisensor.net.listening import ListenerService

    listener = next(child for child in service if isinstance(child, ListenerService))
    return listener.when_listening()


def _jsonl_objects(path) -> list[dict]:
    import json

    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # whole lines only
    return [json.loads(line) for line in lines]


def _has_tables(db) -> bool:
    """Whether the store's tables exist: a collector creates the file a moment before them."""
    return db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('readings', 'gaps')").fetchone()[0] == 2


def stored_messages(path) -> list[str]:
    """
    The messages in a store file, oldest first (JSON Lines or SQLite): each v1
    message's text, and each v2 reading's text; gap records have none.
    """
    import sqlite3
    from contextlib import closing
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return []
    if path.suffix == ".jsonl":
        objects = _jsonl_objects(path)
        return [o["message"] if "kind" not in o else o["text"] for o in objects if o.get("kind") != "gap"]
    with closing(sqlite3.connect(path)) as db:
        if not _has_tables(db):
            return []
        return [row[0] for row in db.execute("SELECT message FROM readings ORDER BY id")]


def stored_stream(path) -> list:
    """
    The v2 records in a store file (JSON Lines or SQLite), as
    L{rpisensor.stream.records.StreamReading} and C{StreamGap}, in stream
    order: by device, stream, then seq (a gap at its first seq). v1 messages
    are left out (see L{stored_messages}).
    """
    import sqlite3
    from contextlib import closing
    from pathlib import Path

    from rpisensor.stream.records import StreamGap, StreamReading

    path = Path(path)
    if not path.exists():
        return []
    records: list = []
    if path.suffix == ".jsonl":
        for o in _jsonl_objects(path):
            if o.get("kind") == "reading":
                records.append(StreamReading(
                    o["device"], o["stream"], o["seq"], o["ts"], o["synced"], o["sensor"], o["value"],
                    o["unit"], o["text"], o["peer"], o["received"], o["identity"],
                ))  # fmt: skip
            elif o.get("kind") == "gap":
                records.append(StreamGap(
                    o["device"], o["stream"], o["from"], o["to"], o["reason"], o["peer"], o["received"],
                    o["identity"],
                ))  # fmt: skip
    else:
        with closing(sqlite3.connect(path)) as db:
            if not _has_tables(db):
                return []
            for row in db.execute(
                "SELECT device, stream, seq, ts, synced, sensor, value, unit, text, peer, received, identity "
                "FROM readings WHERE seq IS NOT NULL"
            ):
                records.append(StreamReading(*row[:4], bool(row[4]), *row[5:]))
            for row in db.execute(
                "SELECT device, stream, from_seq, to_seq, reason, peer, received, identity FROM gaps"
            ):
                records.append(StreamGap(*row))
    return sorted(records, key=lambda r: (r.device, r.stream, r.seq if isinstance(r, StreamReading) else r.first))
