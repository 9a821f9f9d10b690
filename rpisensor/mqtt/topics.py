"""
Every topic the Pi publishes to or listens on, in one place. With the
default prefix and a Pi whose device id is C{pi-kitchen-3f2a9c}:

  - C{rpisensor/pi-kitchen-3f2a9c/availability}: C{online} (birth) or
    C{offline} (last will, or a clean stop); retained.
  - C{rpisensor/pi-kitchen-3f2a9c/stream}: every reading and gap of the
    outbox, once or more (QoS 1), in order, as JSON (L{rpisensor.mqtt.messages}).
  - C{rpisensor/pi-kitchen-3f2a9c/ack}: a collector's acks (C{collect --mqtt}):
    which entries of the stream its database committed; the Pi lets go of
    them with C{--ack end-to-end}.
  - C{rpisensor/pi-kitchen-3f2a9c/NAME/state}: the latest state of input,
    sensor or output NAME; retained.
  - C{rpisensor/pi-kitchen-3f2a9c/NAME/set}: C{ON} or C{OFF} switches output
    NAME (only with C{--mqtt-control}).
  - C{rpisensor/pi-kitchen-3f2a9c/sync}: the Pi's own marker, echoed to it
    by the broker once the retained discovery configs have arrived.
  - C{homeassistant/device/rpisensor_pi-kitchen-3f2a9c/config} (device-based
    discovery) or C{homeassistant/COMPONENT/rpisensor_pi-kitchen-3f2a9c/NAME/config}
    (per entity); retained.
  - C{homeassistant/status}: Home Assistant's birth (C{online}): the Pi
    announces itself again.

Collectors (C{collect --mqtt}) subscribe to every Pi's stream through a
shared subscription, C{$share/GROUP/rpisensor/+/stream} (L{shared_streams}),
so that the broker gives each message to one collector of the group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NODE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def node_id(device: str) -> str:
    """The Pi's id in discovery topics, which allow only C{[a-zA-Z0-9_-]}: C{rpisensor_pi-kitchen-3f2a9c}."""
    return "rpisensor_" + _NODE_UNSAFE.sub("_", device)


@dataclass(frozen=True)
class Topics:
    """The topics of one Pi under C{prefix}, and Home Assistant's under C{ha_prefix}."""

    prefix: str
    device: str
    ha_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def stream(self) -> str:
        return f"{self.base}/stream"

    @property
    def ack(self) -> str:
        return f"{self.base}/ack"

    @property
    def sync(self) -> str:
        return f"{self.base}/sync"

    def state(self, name: str) -> str:
        return f"{self.base}/{name}/state"

    def command(self, name: str) -> str:
        return f"{self.base}/{name}/set"

    @property
    def commands(self) -> str:
        """The subscription that takes every output's command."""
        return f"{self.base}/+/set"

    def commanded(self, topic: str) -> str | None:
        """The output a command topic names, or C{None} if C{topic} is not one."""
        head, tail = f"{self.base}/", "/set"
        if topic.startswith(head) and topic.endswith(tail):
            name = topic[len(head) : -len(tail)]
            if name and "/" not in name:
                return name
        return None

    # -- Home Assistant ------------------------------------------------------------------

    @property
    def node(self) -> str:
        return node_id(self.device)

    @property
    def ha_status(self) -> str:
        return f"{self.ha_prefix}/status"

    @property
    def device_config(self) -> str:
        """Device-based discovery: one config for the whole Pi."""
        return f"{self.ha_prefix}/device/{self.node}/config"

    def entity_config(self, platform: str, key: str) -> str:
        """Per-entity discovery: one config per input, sensor or output."""
        return f"{self.ha_prefix}/{platform}/{self.node}/{key}/config"

    @property
    def entity_configs(self) -> str:
        """The subscription that finds every per-entity config of this Pi."""
        return f"{self.ha_prefix}/+/{self.node}/+/config"


def shared_streams(prefix: str, group: str) -> str:
    """The shared subscription to every Pi's stream under C{prefix}: one collector of C{group} gets each message."""
    return f"$share/{group}/{prefix}/+/stream"


def stream_device(prefix: str, topic: str) -> str | None:
    """The device whose stream topic C{topic} is (C{PREFIX/DEVICE/stream}), or C{None} if it is not one."""
    head, tail = f"{prefix}/", "/stream"
    if topic.startswith(head) and topic.endswith(tail):
        device = topic[len(head) : -len(tail)]
        if device and "/" not in device:
            return device
    return None
