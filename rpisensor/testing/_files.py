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
    L{rpisensor.entries.Reading} and C{Gap}, in stream
    order: by device, stream, then seq (a gap at its first seq). v1 messages
    are left out (see L{stored_messages}).
    """
    import sqlite3
    from contextlib import closing
    from pathlib import Path

    from rpisensor.entries import Gap, Reading

    path = Path(path)
    if not path.exists():
        return []
    records: list = []
    if path.suffix == ".jsonl":
        for o in _jsonl_objects(path):
            if o.get("kind") == "reading":
                records.append(Reading(
                    device=o["device"], stream=o["stream"], seq=o["seq"], ts=o["ts"], synced=o["synced"],
                    sensor=o["sensor"], value=o["value"], unit=o["unit"], text=o["text"], peer=o["peer"],
                    received=o["received"], identity=o["identity"],
                ))  # fmt: skip
            elif o.get("kind") == "gap":
                records.append(Gap(
                    device=o["device"], stream=o["stream"], first=o["from"], last=o["to"], reason=o["reason"],
                    peer=o["peer"], received=o["received"], identity=o["identity"],
                ))  # fmt: skip
    else:
        with closing(sqlite3.connect(path)) as db:
            if not _has_tables(db):
                return []
            for row in db.execute(
                "SELECT device, stream, seq, ts, synced, sensor, value, unit, text, peer, received, identity "
                "FROM readings WHERE seq IS NOT NULL"
            ):
                names = ("device", "stream", "seq", "ts", "synced", "sensor", "value", "unit", "text", "peer",
                         "received", "identity")  # fmt: skip
                fields = dict(zip(names, row))
                records.append(Reading(**{**fields, "synced": bool(fields["synced"])}))
            for row in db.execute(
                "SELECT device, stream, from_seq, to_seq, reason, peer, received, identity FROM gaps"
            ):
                names = ("device", "stream", "first", "last", "reason", "peer", "received", "identity")
                records.append(Gap(**dict(zip(names, row))))
    return sorted(records, key=lambda r: (r.device, r.stream, r.first))
