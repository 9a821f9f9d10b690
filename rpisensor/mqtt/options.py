"""
C{report}'s options for MQTT and Home Assistant, and its outputs (which only
MQTT can drive). Checked when parsed, so that a mistake is a usage error
naming the option; nothing here imports paho or the reactor.
"""

from __future__ import annotations

import os

from twisted.python import usage

from rpisensor.mqtt.settings import (
    DEFAULT_PREFIX,
    DISCOVERY_MODES,
    HA_PREFIX,
    Broker,
    MQTTSettings,
    SettingsError,
    check_topic_prefix,
    parse_url,
    read_credentials,
)
from rpisensor.roles._options.control import OutputOptions

#: The options that mean nothing without --mqtt.
_NEEDS_MQTT = ("mqtt-ca", "mqtt-cert", "mqtt-key", "mqtt-credentials", "mqtt-prefix", "mqtt-discovery", "ha-prefix")


class MQTTOptions(OutputOptions):
    """Publishing the outbox to an MQTT broker, and Home Assistant's discovery."""

    optFlags = [
        ["mqtt-control", None,
         "Let MQTT clients (Home Assistant's switches) drive the outputs: ON or OFF on "
         "PREFIX/DEVICE/NAME/set, under --control-rate, each command logged; a deadman "
         "output goes safe when the link to the broker drops. Off by default: the outputs "
         "then appear read-only."],
    ]
    optParameters = [
        ["mqtt", None, None,
         "Publish every reading of the outbox to this MQTT broker (MQTT v5, QoS 1, let go of "
         "only once the broker acknowledged it), keep each input's, sensor's and output's state "
         "there for Home Assistant, and announce them by its MQTT discovery. Instead of "
         "--connect. Examples: --mqtt mqtt://192.168.1.10  --mqtt mqtts://broker.lan:8883"],
        ["mqtt-ca", None, None,
         "mqtts://: the CA certificate (PEM) that signed the broker's; by default the "
         "system's CAs. Example: --mqtt-ca /etc/rpisensor/ca.pem"],
        ["mqtt-cert", None, None,
         "mqtts://: a client certificate (PEM) to show the broker, with --mqtt-key unless the "
         "file holds the key too. Example: --mqtt-cert /etc/rpisensor/pi.pem"],
        ["mqtt-key", None, None, "mqtts://: the private key (PEM) of --mqtt-cert."],
        ["mqtt-credentials", None, None,
         "A file whose first line is the MQTT user name and second the password (never on "
         "the command line; chmod 600 it). Example: --mqtt-credentials /etc/rpisensor/mqtt.txt"],
        ["mqtt-prefix", None, None,
         f"The first topic level(s) of everything the Pi publishes (default {DEFAULT_PREFIX}): "
         "PREFIX/DEVICE/stream, PREFIX/DEVICE/NAME/state, ... Example: --mqtt-prefix home/pis"],
        ["mqtt-discovery", None, None,
         "How the Pi is announced to Home Assistant: device (one config for the Pi, Home "
         "Assistant 2024.11 and later; the default), entity (one config per input, sensor and "
         "output) or none. Example: --mqtt-discovery entity"],
        ["ha-prefix", None, None,
         f"Home Assistant's discovery prefix (default {HA_PREFIX}); its status topic is "
         "PREFIX/status. Example: --ha-prefix ha"],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self["ha-classes"] = {}

    def opt_ha_class(self, value: str) -> None:
        """
        Home Assistant's device class of an input (a binary_sensor: door, window, motion,
        ...) or of a sensor (temperature, humidity, ...; by default taken from its unit
        where the unit says it), NAME=CLASS (repeatable). Example: --ha-class door=door
        """
        name, sep, device_class = value.partition("=")
        if not sep or not name.strip() or not device_class.strip():
            raise usage.UsageError(f"--ha-class: expected NAME=CLASS, e.g. door=door, got {value!r}")
        self["ha-classes"][name.strip()] = device_class.strip()

    def postOptions(self) -> None:
        super().postOptions()
        if not self["mqtt"]:
            given = [f"--{name}" for name in _NEEDS_MQTT if self[name] is not None]
            given += ["--mqtt-control"] * bool(self["mqtt-control"]) + ["--ha-class"] * bool(self["ha-classes"])
            given += ["--output"] * bool(self["outputs"])
            if given:
                raise usage.UsageError(f"{given[0]} needs --mqtt URL (the MQTT broker)")
            return
        if self.get("connect"):
            raise usage.UsageError(
                "give --connect or --mqtt, not both: the outbox lets a reading go once one of them has it"
            )
        try:
            tls, host, port = parse_url(self["mqtt"])
        except SettingsError as e:
            raise usage.UsageError(f"--mqtt: {e}") from None
        for name in ("mqtt-ca", "mqtt-cert", "mqtt-key"):
            path = self[name]
            if path is None:
                continue
            if not tls:
                raise usage.UsageError(f"--{name} needs an mqtts:// broker URL (TLS), got {self['mqtt']}")
            if not os.access(path, os.R_OK):
                raise usage.UsageError(f"--{name} {path}: cannot read it")
        if self["mqtt-key"] is not None and self["mqtt-cert"] is None:
            raise usage.UsageError("--mqtt-key needs --mqtt-cert (the certificate of that key)")
        username = password = None
        if self["mqtt-credentials"] is not None:
            try:
                username, password, warning = read_credentials(self["mqtt-credentials"])
            except SettingsError as e:
                raise usage.UsageError(f"--mqtt-credentials: {e}") from None
            #: Said at start-up (a world-readable secret).
            self.mqtt_warning = warning
        self["mqtt-broker"] = Broker(host, port, tls, self["mqtt-ca"], self["mqtt-cert"], self["mqtt-key"],
                                     username, password)  # fmt: skip
        self["mqtt-prefix"] = self["mqtt-prefix"] or DEFAULT_PREFIX
        self["ha-prefix"] = self["ha-prefix"] or HA_PREFIX
        self["mqtt-discovery"] = self["mqtt-discovery"] or "device"
        for name in ("mqtt-prefix", "ha-prefix"):
            try:
                check_topic_prefix(f"--{name}", self[name])
            except SettingsError as e:
                raise usage.UsageError(str(e)) from None
        if self["mqtt-discovery"] not in DISCOVERY_MODES:
            raise usage.UsageError(
                f"--mqtt-discovery must be one of {', '.join(DISCOVERY_MODES)}, got {self['mqtt-discovery']!r}"
            )
        try:
            self.mqtt_entities()
        except ValueError as e:
            raise usage.UsageError(f"--ha-class: {e}") from None

    def mqtt_entities(self):
        """The entities Home Assistant gets, as the options say."""
        from rpisensor.mqtt.discovery import entities

        sensors = {spec.name: (spec.unit, spec.source) for spec in self.get("sensors", ())}
        names = [spec.name for spec in self["inputs"]]
        outputs = [spec.name for spec in self["outputs"]]
        return entities(names, sensors, outputs, self["ha-classes"], self["mqtt-control"])

    def mqtt_settings(self, device: str, window: int) -> MQTTSettings:
        """The MQTT settings for this Pi (its device id, the outbox's window)."""
        timeout = self["dead-peer-timeout"]
        keepalive = max(5, round(timeout / 2)) if timeout > 0 else 60
        try:
            return MQTTSettings(
                self["mqtt-broker"], device, self["mqtt-prefix"], self["mqtt-discovery"], self["ha-prefix"],
                dict(self["ha-classes"]), bool(self["mqtt-control"]), keepalive, window, self["max-delay"],
            )  # fmt: skip
        except SettingsError as e:
            raise SystemExit(f"rpisensor: --mqtt: {e}") from None

    mqtt_warning: str | None = None
