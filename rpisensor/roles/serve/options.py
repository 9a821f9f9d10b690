"""
The command line of C{serve}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options import GPIOOptions, ListenOptions
from rpisensor.roles._options.base import count, non_negative_float
from rpisensor.roles._options.control import ControlOptions
from rpisensor.roles._options.journal import journal_options
from rpisensor.roles._options.web import WebOptions

#: The shortest --poll-interval: a read of every input a thousand times a second.
MIN_POLL_INTERVAL = 0.001

JournalOptions = journal_options(
    "journal", "rpisensor-journal.sqlite", "holding the inputs' changes for subscribers"
)


class ServeOptions(ControlOptions, GPIOOptions, ListenOptions, JournalOptions, WebOptions):
    """C{serve}: answer clients' commands with the inputs' state, and stream its changes."""

    synopsis = "[options]"
    longdesc = (
        "Listen for clients and answer 'go' with the first input's text ('Button pressed' "
        "or 'Button released'), as the tutorial's DataServer1 does, to any number of clients. "
        "Also: 'read NAME', 'list', 'ping', 'help', 'status'; 'subscribe' streams every change "
        "of every input, each exactly once (protocol v2: poll --subscribe); with simulated "
        "pins, 'sim NAME press' from this machine; with --output, 'set NAME on|off', 'pulse NAME MS', "
        "'pwm NAME DUTY', 'stop', 'outputs', 'claim', 'release' (driving needs a grant: "
        "--control-allow, --control-cert). "
        "Example: twistd -n rpisensor serve --listen tcp:22000 --input button=24"
    )

    optParameters = [
        ["poll-interval", None, "0.1",
         "Seconds between two reads of every input that reports no changes by itself, to record "
         "each change in the journal for subscribers: a change is seen within this time (a press "
         "shorter than it may be missed). RPi.GPIO's inputs are read in one pass by a thread of "
         "their own, which wakes the server only on a change; other such inputs through the read "
         f"pool (--read-threads). At least {MIN_POLL_INTERVAL:g}. Example: --poll-interval 0.01"],
        ["max-subscribers", None, "50",
         "Subscriptions at once (0: none; they count toward --max-connections too); more are refused "
         "with 'error: busy' and may use go. Each may hold up to twice --window readings in "
         "memory while it catches up. Example: --max-subscribers 10"],
        ["max-subscriber-lag", None, "30",
         "Seconds a subscriber may leave what is sent to it unread (its connection's buffer "
         "full) before it is dropped; it resumes from its last acknowledged reading when it "
         "reconnects, without loss. Example: --max-subscriber-lag 120"],
    ]  # fmt: skip

    def postOptions(self) -> None:
        super().postOptions()
        self["poll-interval"] = non_negative_float("poll-interval", self["poll-interval"])
        if self["poll-interval"] < MIN_POLL_INTERVAL:
            raise usage.UsageError(
                f"--poll-interval must be at least {MIN_POLL_INTERVAL:g} seconds, "
                f"got {self['poll-interval']:g}"
            )
        self["max-subscribers"] = count("max-subscribers", self["max-subscribers"], minimum=0)
        self["max-subscriber-lag"] = non_negative_float("max-subscriber-lag", self["max-subscriber-lag"])
        if self["max-subscriber-lag"] <= 0:
            raise usage.UsageError("--max-subscriber-lag must be more than 0 seconds")

    def publish_settings(self, device: str):
        """How to publish the journal, as the options say, for C{device}."""
        from rpisensor.roles.serve.publishing import PublishSettings

        return PublishSettings(
            device=device,
            window=self["window"],
            poll_interval=self["poll-interval"],
            max_subscribers=self["max-subscribers"],
            max_lag=self["max-subscriber-lag"],
        )
