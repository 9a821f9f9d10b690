"""
The options of the client roles: C{poll} and C{report}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options.base import FoldedOptions, check_endpoint, non_negative_float


class ConnectOptions(FoldedOptions):
    """Options of the client roles: poll and report."""

    optParameters = [
        ["connect", None, None,
         "The server, as a Twisted client endpoint (required). "
         "Examples: --connect tcp:host=192.168.0.17:port=22000  "
         "--connect tls:host=myhome.example.org:port=22443  --connect unix:path=/run/rpisensor.sock"],
        ["max-delay", None, "60",
         "Longest wait, in seconds, between reconnection attempts; waits grow from 1 s "
         "to this. Example: --max-delay 30"],
        ["interval", None, "2", "Seconds between messages, as the tutorial's 2 s. Example: --interval 1"],
    ]  # fmt: skip

    def postOptions(self) -> None:
        super().postOptions()
        if not self["connect"]:
            raise usage.UsageError("--connect is required, e.g. --connect tcp:host=192.168.0.17:port=22000")
        check_endpoint("connect", self["connect"], "clientFromString")
        self["max-delay"] = non_negative_float("max-delay", self["max-delay"])
        if self["max-delay"] < 1:
            raise usage.UsageError(f"--max-delay must be at least 1 second, got {self['max-delay']}")
        self["interval"] = non_negative_float("interval", self["interval"])
        if self["interval"] <= 0:
            raise usage.UsageError("--interval must be more than 0 seconds")
