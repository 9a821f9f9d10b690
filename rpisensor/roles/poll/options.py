"""
The command line of C{poll}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options import ConnectOptions, non_negative_float


class PollOptions(ConnectOptions):
    """C{poll}: ask a server for its state every few seconds."""

    synopsis = "--connect ENDPOINT [options]"
    longdesc = (
        "Send 'go' to a sensor server every 2 s and log each reply with its time, as the "
        "tutorial's DataClient1/2; reconnect by itself when the link drops. Example: "
        "twistd -n rpisensor poll --connect tcp:host=192.168.0.17:port=22000"
    )
    optParameters = [
        ["command", None, "go", "The message sent each time. Example: --command 'read door'"],
        ["timeout", None, "10",
         "Seconds to wait for a reply before calling the link dead and reconnecting. "
         "Example: --timeout 5"],
    ]  # fmt: skip

    def postOptions(self) -> None:
        super().postOptions()
        self["timeout"] = non_negative_float("timeout", self["timeout"])
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be more than 0 seconds")
        if "\0" in self["command"] or not self["command"].strip():
            raise usage.UsageError("--command must be non-empty text without NUL")
