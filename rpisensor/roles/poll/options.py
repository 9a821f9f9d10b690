"""
The command line of C{poll}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options import ConnectOptions, non_negative_float
from rpisensor.roles._options.web import WebOptions
from rpisensor.roles.collect.options import check_store

#: Seconds to wait for a v2 server's welcome before polling it as a v1 server.
DEFAULT_HELLO_TIMEOUT = 3.0


class PollOptions(ConnectOptions, WebOptions):
    """C{poll}: ask a server for its state every few seconds, or follow its stream."""

    synopsis = "--connect ENDPOINT [options]"
    longdesc = (
        "Send 'go' to a sensor server every 2 s and log each reply with its time, as the "
        "tutorial's DataClient1/2; reconnect by itself when the link drops. With --subscribe, "
        "the server pushes every change instead (each input's state first), and with --store "
        "each reading is stored exactly once, resuming where the store ends after any outage. "
        "Examples: twistd -n rpisensor poll --connect tcp:host=192.168.0.17:port=22000  "
        "twistd -n rpisensor poll --connect 192.168.0.17:22000 --subscribe --store readings.sqlite"
    )
    optFlags = [
        ["subscribe", None,
         "Follow the server's stream of readings (rpisensor serve with its journal) instead of "
         "polling; a server that does not stream (the tutorial's, an older serve) is polled."],
    ]  # fmt: skip
    optParameters = [
        ["command", None, "go", "The message sent each time. Example: --command 'read door'"],
        ["timeout", None, "10",
         "Seconds to wait for a reply before calling the link dead and reconnecting. "
         "Example: --timeout 5"],
        ["store", None, None,
         "With --subscribe: file to store the readings in, each exactly once: .jsonl (JSON "
         "Lines) or .sqlite/.db (SQLite), as collect's --store. Without it readings are only "
         "logged. Example: --store readings.sqlite"],
        ["hello-timeout", None, f"{DEFAULT_HELLO_TIMEOUT:g}",
         "With --subscribe: seconds to wait for the server's answer to hello; without one (or "
         "with an error) the server is polled with --command instead. Example: --hello-timeout 5"],
    ]  # fmt: skip

    def postOptions(self) -> None:
        super().postOptions()
        self["timeout"] = non_negative_float("timeout", self["timeout"])
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be more than 0 seconds")
        if "\0" in self["command"] or not self["command"].strip():
            raise usage.UsageError("--command must be non-empty text without NUL")
        self["hello-timeout"] = non_negative_float("hello-timeout", self["hello-timeout"])
        if self["hello-timeout"] <= 0:
            raise usage.UsageError("--hello-timeout must be more than 0 seconds")
        if self["store"] is not None and not self["subscribe"]:
            raise usage.UsageError(
                "--store needs --subscribe: polled replies carry no sequence numbers to store exactly "
                "once. Add --subscribe."
            )
        check_store("store", self["store"])
        if self["web"] and not self["subscribe"]:
            raise usage.UsageError(
                "--web needs --subscribe: the page follows the server's stream of readings. Add --subscribe."
            )
