"""
The command line of C{collect}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options.mqtt import BrokerOptions
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


#: (rpisensor.mqtt.ingest.DEFAULT_GROUP, without importing it for --help)
DEFAULT_GROUP = "rpisensor"


class CollectOptions(ListenOptions, WebOptions, BrokerOptions):
    """C{collect}: accept reporters and store what they send."""

    synopsis = "[options]"
    longdesc = (
        "Accept any number of reporters, log every message with its sender and time, and "
        "append it to --store, as the tutorial's DataServer3 with a memory. A reporter that "
        "opens with a v2 hello sends its readings as a stream: each is stored exactly once, "
        "and acknowledged once it is on disk. With --mqtt it takes the readings Pis publish to an "
        "MQTT broker too (or only those), and with --publish-mqtt it publishes what reporters "
        "send it. Examples: twistd -n rpisensor collect --listen tcp:22000 --store readings.jsonl  "
        "twistd -n rpisensor collect --mqtt mqtt://broker.lan --store postgresql://collector@db/readings"
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
        ["mqtt", None, None,
         "Store the readings Pis publish to this MQTT broker (report --mqtt URL --ack end-to-end): "
         "every Pi's stream through the MQTT v5 shared subscription $share/GROUP/PREFIX/+/stream, "
         "so that the collectors of a group share the load and take over from each other; each "
         "reading stored once, and acknowledged on its Pi's ack topic once committed. Needs an "
         "SQLite or PostgreSQL --store. Without --listen, no listener. Example: --mqtt "
         "mqtt://broker.lan"],
        ["mqtt-group", None, None,
         f"With --mqtt: the shared subscription's group (default {DEFAULT_GROUP}): the collectors "
         "of one group split the Pis' messages between them. Example: --mqtt-group greenhouses"],
        ["publish-mqtt", None, None,
         "Publish every reading reporters send over --listen to this MQTT broker, as report --mqtt "
         "would (PREFIX/DEVICE/stream, QoS 1); a reading is acknowledged to its Pi only once the "
         "broker and the store have it. Example: --publish-mqtt mqtt://broker.lan"],
    ]  # fmt: skip

    optFlags = [
        ["timescale", None,
         "With a PostgreSQL --store: make the readings table a TimescaleDB hypertable on the "
         "Pi's timestamp (the extension must be installed in the server)."],
    ]  # fmt: skip

    def postOptions(self) -> None:
        listening = bool(self["listen"])
        super().postOptions()
        check_store("store", self["store"], self["timescale"])
        self["max-stream-pending"] = count("max-stream-pending", self["max-stream-pending"], 1)
        self.broker_given("mqtt", "publish-mqtt")
        if self["mqtt-group"] is not None:
            if not self["mqtt"]:
                raise usage.UsageError("--mqtt-group needs --mqtt URL (the MQTT broker)")
            group = self["mqtt-group"]
            if not group or any(c in group for c in "/+#\0"):
                raise usage.UsageError(f"--mqtt-group must be one topic level (no /, + or #), got {group!r}")
        self["mqtt-group"] = self["mqtt-group"] or DEFAULT_GROUP
        if self["mqtt"]:
            # (Without a store, a Pi would be told "committed" of readings no database holds.)
            store = self["store"] or ""
            if not store.lower().startswith(("postgresql://", "postgres://")) and not store.lower(
            ).endswith((".sqlite", ".db")):  # fmt: skip
                raise usage.UsageError(
                    "--mqtt needs an SQLite (.sqlite, .db) or PostgreSQL store: readings through a broker "
                    "can come twice and out of order, and only those stores keep each once by its seq"
                )
            if not listening:
                self["listen"] = []  # --mqtt alone: no listener
