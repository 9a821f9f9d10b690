"""
The options of the client roles: C{poll} and C{report}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options.base import FoldedOptions, check_client_endpoint, non_negative_float

#: The shortest --dead-peer-timeout: the kernel's keepalive counts whole seconds,
#: and a live peer may leave an early window probe unanswered for about a second
#: (Linux rate-limits its answers to out-of-window segments to two a second).
MIN_DEAD_PEER_TIMEOUT = 2.0


class ConnectOptions(FoldedOptions):
    """Options of the client roles: poll and report."""

    def __init__(self) -> None:
        super().__init__()
        self["connect"] = []

    def opt_connect(self, description: str) -> None:
        """
        The server, as a Twisted client endpoint or HOST:PORT (required). Give it
        more than once for several servers (collectors sharing a database): each
        attempt tries them in turn, from the one that worked last; a name with
        several addresses is tried address by address. Examples: --connect
        tcp:host=192.168.0.17:port=22000  --connect 192.168.0.17:22000  --connect
        tls:host=myhome.example.org:port=22443  --connect unix:path=/run/rpisensor.sock
        """
        self["connect"].append(description)

    optParameters = [
        ["max-delay", None, "60",
         "Longest wait, in seconds, between reconnection attempts: while attempts fail "
         "the waits are 0.2, 0.5, 1, 2, 4, 8 ... s up to this, each up to a quarter longer "
         "at random (after a link that worked drops, the first retry comes after 0.2 s). "
         "Example: --max-delay 30"],
        ["interval", None, "2", "Seconds between messages, as the tutorial's 2 s. Example: --interval 1"],
        ["dead-peer-timeout", None, "30",
         "Seconds without an answer from the server, at the TCP level, before the link "
         "counts as dead and is replaced (0: never). The kernel probes an idle link with "
         "TCP keepalive (3 probes, the first after half of this time); data left "
         "unacknowledged this long means dead; a server that only stops reading for a "
         "while is alive as long as it answers the kernel's window probes. "
         "Example: --dead-peer-timeout 60"],
    ]  # fmt: skip

    def connect_required(self) -> bool:
        """Whether C{--connect} must be given (C{report --mqtt} sends elsewhere)."""
        return True

    def postOptions(self) -> None:
        super().postOptions()
        if not self["connect"] and self.connect_required():
            raise usage.UsageError("--connect is required, e.g. --connect tcp:host=192.168.0.17:port=22000")
        #: The servers, checked, in the order given.
        self["connect"] = tuple(check_client_endpoint("connect", d) for d in self["connect"])
        self["max-delay"] = non_negative_float("max-delay", self["max-delay"])
        if self["max-delay"] < 1:
            raise usage.UsageError(f"--max-delay must be at least 1 second, got {self['max-delay']}")
        self["interval"] = non_negative_float("interval", self["interval"])
        if self["interval"] <= 0:
            raise usage.UsageError("--interval must be more than 0 seconds")
        timeout = self["dead-peer-timeout"] = non_negative_float("dead-peer-timeout", self["dead-peer-timeout"])
        if 0 < timeout < MIN_DEAD_PEER_TIMEOUT:
            raise usage.UsageError(
                f"--dead-peer-timeout must be 0 (off) or at least {MIN_DEAD_PEER_TIMEOUT:g} seconds, "
                f"got {timeout:g}"
            )
