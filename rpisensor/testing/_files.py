"""
Finding where a role listens, and what a collector stored.
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


def stored_messages(path) -> list[str]:
    """The messages in a collector's store file, oldest first (JSON Lines or SQLite)."""
    import json
    import sqlite3
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return []
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # whole lines only
        return [json.loads(line)["message"] for line in lines]
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT message FROM readings ORDER BY id")]
