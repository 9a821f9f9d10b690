"""
The command line of C{collect}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options import ListenOptions


class CollectOptions(ListenOptions):
    """C{collect}: accept reporters and store what they send."""

    synopsis = "[options]"
    longdesc = (
        "Accept any number of reporters, log every message with its sender and time, and "
        "append it to --store, as the tutorial's DataServer3 with a memory. Example: "
        "twistd -n rpisensor collect --listen tcp:22000 --store readings.jsonl"
    )
    optParameters = [
        ["store", None, None,
         "File to append messages to: .jsonl (JSON Lines) or .sqlite/.db (SQLite). Without "
         "it messages are only logged. Example: --store readings.sqlite"],
    ]  # fmt: skip

    def postOptions(self) -> None:
        super().postOptions()
        if self["store"] is not None:
            from rpisensor.store import store_file_for

            try:
                store_file_for(self["store"])
            except ValueError as e:
                raise usage.UsageError(f"--store: {e}") from None
