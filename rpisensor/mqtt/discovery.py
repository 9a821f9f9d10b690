"""
Home Assistant's MQTT discovery, in its current form: the configs that make
every input, sensor and output of the Pi appear in Home Assistant by itself,
and the messages that take away what the Pi no longer has.

  - Device-based discovery (Home Assistant 2024.11 and later, the default):
    one retained config per Pi, C{homeassistant/device/NODE/config}, with the
    device (C{dev}), the origin (C{o}) and one component per entity (C{cmps}).
    A component the Pi no longer has is removed as Home Assistant documents
    it: one config in which that component has only its platform (C{p}),
    then the config without it.
  - Per-entity discovery (C{--mqtt-discovery entity}): one retained config
    per entity, C{homeassistant/PLATFORM/NODE/KEY/config}; one the Pi no
    longer has gets an empty retained config, which removes the entity.
  - Moving between the two follows Home Assistant's migration: the old
    configs get C{{"migrate_discovery": true}} first (the entities keep their
    settings, as their unique ids stay the same), the new ones are published,
    then the old ones are emptied.

Entities: an input is a C{binary_sensor} (C{ON} when active; its device
class, e.g. C{door} or C{motion}, from C{--ha-class}); a measurement sensor
a C{sensor} with its unit, C{state_class: measurement} and a device class
(from its unit where that is unambiguous, else from C{--ha-class}); an output
a C{switch} whose state is what the pin does (no optimistic mode) when
C{--mqtt-control} lets Home Assistant drive it, else a read-only
C{binary_sensor} of class C{power}. Each entity's C{unique_id} and
C{default_entity_id} are made from the device id and its name; the key
C{object_id}, deprecated (it stops working in Home Assistant 2026.4), is
never sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rpisensor import __version__
from rpisensor.mqtt.topics import Topics

#: Home Assistant's binary_sensor device classes (its binary_sensor documentation).
BINARY_SENSOR_CLASSES = frozenset({
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door",
    "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug",
    "power", "presence", "problem", "running", "safety", "smoke", "sound", "tamper", "update",
    "vibration", "window",
})  # fmt: skip
#: Home Assistant's sensor device classes (its sensor documentation).
SENSOR_CLASSES = frozenset({
    "absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure", "battery",
    "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide", "conductivity", "current",
    "data_rate", "data_size", "distance", "duration", "energy", "energy_distance",
    "energy_storage", "frequency", "gas", "humidity", "illuminance", "irradiance", "moisture",
    "monetary", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1",
    "pm10", "pm25", "pm4", "power", "power_factor", "precipitation", "precipitation_intensity",
    "pressure", "reactive_energy", "reactive_power", "signal_strength", "sound_pressure", "speed",
    "sulphur_dioxide", "temperature", "volatile_organic_compounds",
    "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate", "volume_storage",
    "water", "weight", "wind_direction", "wind_speed",
})  # fmt: skip
#: A sensor's device class from its unit, where the unit says it alone.
_CLASS_OF_UNIT = {
    "°C": "temperature", "°F": "temperature", "K": "temperature",
    "hPa": "pressure", "kPa": "pressure", "Pa": "pressure", "mbar": "pressure", "bar": "pressure",
    "mmHg": "pressure", "inHg": "pressure", "psi": "pressure",
    "V": "voltage", "mV": "voltage", "A": "current", "mA": "current", "W": "power", "kW": "power",
    "lx": "illuminance", "Hz": "frequency",
}  # fmt: skip

PLATFORMS = ("binary_sensor", "sensor", "switch")
_SLUG = re.compile(r"[^a-z0-9_]+")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sensor_class(unit: str | None, source: str = "") -> str | None:
    """The device class a measurement's unit (or an IIO humidity channel) implies, if any."""
    if source.endswith(":humidityrelative"):
        return "humidity"
    return _CLASS_OF_UNIT.get(unit or "")


@dataclass(frozen=True)
class Entity:
    """
    What one input, sensor or output is in Home Assistant.

    @ivar kind: C{input}, C{sensor} or C{output}: how its readings become its state.
    @ivar commandable: Home Assistant may switch it (C{--mqtt-control}).
    """

    name: str
    kind: str
    platform: str
    device_class: str | None = None
    unit: str | None = None
    commandable: bool = False

    @property
    def key(self) -> str:
        """Its id among the Pi's components (and in per-entity topics); a read-only output's differs from its switch's."""
        key = _KEY_UNSAFE.sub("_", self.name)
        return f"{key}_state" if self.kind == "output" and not self.commandable else key


def entities(
    inputs: Iterable[str],
    sensors: Mapping[str, tuple[str | None, str]],
    outputs: Iterable[str],
    classes: Mapping[str, str],
    control: bool,
) -> list[Entity]:
    """
    The Pi's entities.

    @param sensors: each measurement sensor's C{(unit, source)}.
    @param classes: device classes asked for by name (C{--ha-class}).
    @raise ValueError: a class is asked for a name the Pi does not have, or
        one Home Assistant does not know for that entity's platform.
    """
    found: list[Entity] = []
    for name in inputs:
        found.append(Entity(name, "input", "binary_sensor", _class(classes, name, BINARY_SENSOR_CLASSES)))
    for name, (unit, source) in sensors.items():
        wanted = _class(classes, name, SENSOR_CLASSES) or sensor_class(unit, source)
        found.append(Entity(name, "sensor", "sensor", wanted, unit or None))
    for name in outputs:
        if name in classes:
            raise ValueError(f"{name!r} is an output: its class is switch (or power, read-only), not settable")
        if control:
            found.append(Entity(name, "output", "switch", commandable=True))
        else:
            found.append(Entity(name, "output", "binary_sensor", "power"))
    unknown = set(classes) - {entity.name for entity in found}
    if unknown:
        raise ValueError(f"no input or sensor is named {', '.join(sorted(unknown))}")
    return found


def _class(classes: Mapping[str, str], name: str, known: frozenset[str]) -> str | None:
    wanted = classes.get(name)
    if wanted is not None and wanted not in known:
        examples = ", ".join(sorted(known)[:8])
        raise ValueError(f"{name}: Home Assistant has no device class {wanted!r} here; e.g. {examples}, ...")
    return wanted


class Discovery:
    """
    The discovery configs of one Pi, and the steps from what the broker
    holds (its retained configs, read back) to what the Pi has now.
    """

    def __init__(self, topics: Topics, found: list[Entity], mode: str = "device") -> None:
        self.topics = topics
        self.entities = found
        self.mode = mode

    # -- the configs --------------------------------------------------------------------

    @property
    def device(self) -> dict:
        return {
            "identifiers": [self.topics.node],
            "name": self.topics.device,
            "manufacturer": "rpisensor",
            "model": "rpisensor report",
            "sw_version": __version__,
        }

    @property
    def origin(self) -> dict:
        return {"name": "rpisensor", "sw_version": __version__}

    def unique_id(self, entity: Entity) -> str:
        return f"{self.topics.node}_{entity.key}"

    def component(self, entity: Entity) -> dict:
        """One entity's options (without the device, origin and availability)."""
        slug = _SLUG.sub("_", f"{self.topics.device}_{entity.key}".lower()).strip("_")
        config: dict = {
            "p": entity.platform,
            "unique_id": self.unique_id(entity),
            "default_entity_id": f"{entity.platform}.{slug}",
            "name": entity.name,
            "state_topic": self.topics.state(entity.name),
        }
        if entity.device_class is not None:
            config["device_class"] = entity.device_class
        if entity.platform == "binary_sensor":
            config.update(payload_on="ON", payload_off="OFF")
        elif entity.platform == "sensor":
            config["state_class"] = "measurement"
            if entity.unit:
                config["unit_of_measurement"] = entity.unit
        else:  # a switch: its state is the pin's, never assumed from the command
            config.update(command_topic=self.topics.command(entity.name), payload_on="ON",
                          payload_off="OFF", optimistic=False, retain=False)  # fmt: skip
        return config

    def device_config(self) -> dict:
        """Device-based discovery's one config."""
        return {
            "dev": self.device,
            "o": self.origin,
            "availability_topic": self.topics.availability,
            "qos": 1,
            "cmps": {entity.key: self.component(entity) for entity in self.entities},
        }

    def entity_configs(self) -> dict[str, dict]:
        """Per-entity discovery's configs, by topic."""
        configs = {}
        for entity in self.entities:
            config = self.component(entity)
            del config["p"]
            config.update(dev=self.device, o=self.origin, availability_topic=self.topics.availability, qos=1)
            configs[self.topics.entity_config(entity.platform, entity.key)] = config
        return configs

    def announcement(self) -> list[tuple[str, bytes]]:
        """The configs to publish (retained) now: at connect, and when Home Assistant comes online."""
        if self.mode == "device":
            return [(self.topics.device_config, _encode(self.device_config()))]
        if self.mode == "entity":
            return [(topic, _encode(config)) for topic, config in self.entity_configs().items()]
        return []

    # -- from what the broker holds -------------------------------------------------------

    @property
    def readback(self) -> list[str]:
        """The subscriptions that bring back this Pi's retained configs."""
        return [self.topics.device_config, self.topics.entity_configs]

    def plan(self, retained: Mapping[str, bytes]) -> tuple[list[tuple[str, bytes]], list[str]]:
        """
        The retained messages to publish, in order, to go from C{retained}
        (this Pi's configs on the broker, by topic) to the current configs;
        and the state topics of the entities that are gone, to be emptied.
        """
        if self.mode == "none":
            return [], []
        held = {topic: config for topic, payload in retained.items() if (config := _decode(payload))}
        now = self.announcement()
        current = {topic for topic, _ in now}
        # Configs of the other mode: migrated first, emptied once the new ones are out.
        other = [t for t in held if (t == self.topics.device_config) != (self.mode == "device")]
        # Per-entity configs of entities that are gone: emptied, which removes them.
        stale = [t for t in held if t not in current and t not in other]
        steps = [(topic, _encode({"migrate_discovery": True})) for topic in other]
        old_device = held.get(self.topics.device_config) or {}
        components = old_device.get("cmps") or old_device.get("components") or {}
        if not isinstance(components, dict):
            components = {}
        keys = {entity.key for entity in self.entities}
        removed = {k: c for k, c in components.items() if k not in keys and isinstance(c, dict)}
        if self.mode == "device" and removed:
            # Home Assistant's way to remove a component: it is left with its platform only.
            config = self.device_config()
            config["cmps"].update({k: {"p": c.get("p") or c.get("platform")} for k, c in removed.items()})
            steps.append((self.topics.device_config, _encode(config)))
        steps.extend(now)
        steps.extend((topic, b"") for topic in [*other, *stale])
        gone = [c.get("state_topic") for c in removed.values()]
        gone += [held[topic].get("state_topic") for topic in [*other, *stale] if topic != self.topics.device_config]
        ours = f"{self.topics.base}/"
        keep = {self.topics.state(entity.name) for entity in self.entities}
        states = [t for t in dict.fromkeys(gone) if isinstance(t, str) and t.startswith(ours) and t not in keep]
        return steps, states


def _encode(config: dict) -> bytes:
    return json.dumps(config, ensure_ascii=False, separators=(",", ":")).encode()


def _decode(payload: bytes) -> dict | None:
    if not payload:
        return None
    try:
        config = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return config if isinstance(config, dict) and "migrate_discovery" not in config else None
