"""
The command line of C{report}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options import ConnectOptions, GPIOOptions, non_negative_float


class ReportOptions(GPIOOptions, ConnectOptions):
    """C{report}: push the inputs' state to a server."""

    synopsis = "--connect ENDPOINT [options]"
    longdesc = (
        "Read the inputs every 2 s and send their text ('Button pressed' / 'Button "
        "released') to a server, as the tutorial's DataClient3; keep sampling while the "
        "link is down and send the current state as soon as it is back. Example: "
        "twistd -n rpisensor report --connect tcp:host=myhome.example.org:port=22000"
    )
    optFlags = [
        ["on-change", None, "Send only changes, plus every input's state each --heartbeat seconds."],
    ]
    optParameters = [
        ["heartbeat", None, "60",
         "With --on-change: seconds between full-state messages. Example: --heartbeat 30"],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        self["heartbeat"] = non_negative_float("heartbeat", self["heartbeat"])
        if self["heartbeat"] <= 0:
            raise usage.UsageError("--heartbeat must be more than 0 seconds")
