"""
How C{collect} builds its MQTT side from its options: C{--mqtt} (the Pis'
streams from a broker, L{rpisensor.mqtt.ingest}) and C{--publish-mqtt} (what
reporters send over C{--listen}, published, L{rpisensor.mqtt.bridge}).
"""

from __future__ import annotations

from twisted.logger import Logger

from rpisensor.mqtt.bridge import Bridge
from rpisensor.mqtt.ingest import IngestSettings, StreamIngest, default_client_id
from rpisensor.stream.delivery import Delivery

_log = Logger(namespace="rpisensor.mqtt")


def _warn(options) -> None:
    if options.mqtt_warning is not None:
        _log.warn("{warning}.", warning=options.mqtt_warning)


def bridge_for(options, reactor) -> Bridge:
    """C{--publish-mqtt URL}: the bridge every entry from the reporters goes through before it is stored."""
    _warn(options)
    return Bridge(
        reactor, options["publish-mqtt-broker"], options["mqtt-prefix"], default_client_id() + "-publish",
    )  # fmt: skip


def ingest_for(options, reactor, factory) -> StreamIngest:
    """C{--mqtt URL}: the Pis' streams from the broker into C{factory}'s store (a collector's)."""
    if not options["publish-mqtt"]:
        _warn(options)
    # A delivery of its own: what comes from the broker is stored (and shown), never published again.
    delivery = Delivery(factory.store, factory.delivery.on_reading, factory.delivery.on_gap)
    settings = IngestSettings(options["mqtt-broker"], options["mqtt-prefix"], options["mqtt-group"], default_client_id())
    return StreamIngest(reactor, settings, delivery.many, factory.stamp, factory.show_all)
