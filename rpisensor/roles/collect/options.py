"""
The command line of C{collect}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options import ListenOptions, count
from rpisensor.roles._options.web import WebOptions

#: (rpisensor.roles.collect.collector.MAX_STREAM_PENDING, without importing the network stack for --help)
MAX_STREAM_PENDING = 10_000


def check_store(option: str, value: str | None, timescale: bool = False) -> None:
    """A C{--store} value must name a format the store knows (by its suffix), or a PostgreSQL URL."""
    if value is None:
        if timescale:
            raise usage.UsageError("--timescale is for a PostgreSQL store: add --store postgresql://...")
        return
    from rpisensor.store import store_file_for

    try:
        store_file_for(value, timescale)
    except ValueError as e:
        raise usage.UsageError(f"--{option}: {e}") from None


class CollectOptions(ListenOptions, WebOptions):
    """C{collect}: accept reporters and store what they send."""

    synopsis = "[options]"
    longdesc = (
        "Accept any number of reporters, log every message with its sender and time, and "
        "append it to --store, as the tutorial's DataServer3 with a memory. A reporter that "
        "opens with a v2 hello sends its readings as a stream: each is stored exactly once, "
        "and acknowledged once it is on disk. Example: "
        "twistd -n rpisensor collect --listen tcp:22000 --store readings.jsonl"
    )
    optParameters = [
        ["store", None, None,
         "File to append messages to: .jsonl (JSON Lines) or .sqlite/.db (SQLite); or a "
         "PostgreSQL database, postgresql://USER@HOST/DB, which several collectors can share (the "
         "password from ~/.pgpass, PGPASSFILE or ?passfile=PATH, never in the URL). Without "
         "it messages are only logged. Example: --store readings.sqlite"],
        ["max-stream-pending", None, str(MAX_STREAM_PENDING),
         "Readings of one v2 reporter on their way to the disk at most; beyond that the "
         "collector stops reading from it until they are stored (a reporter's --window "
         "normally keeps it far below). Example: --max-stream-pending 50000"],
    ]  # fmt: skip

    optFlags = [
        ["timescale", None,
         "With a PostgreSQL --store: make the readings table a TimescaleDB hypertable on the "
         "Pi's timestamp (the extension must be installed in the server)."],
    ]  # fmt: skip

    def postOptions(self) -> None:
        super().postOptions()
        check_store("store", self["store"], self["timescale"])
        self["max-stream-pending"] = count("max-stream-pending", self["max-stream-pending"], 1)
