"""
The options for MQTT: the broker's address, TLS and credentials
(L{BrokerOptions}, which C{collect --mqtt} takes too), and C{report}'s for
MQTT and Home Assistant and its outputs (which only MQTT can drive). Checked
when parsed, so that a mistake is a usage error naming the option; nothing
here imports paho or the reactor.
"""

from __future__ import annotations

import os

from twisted.python import usage

from rpisensor.mqtt.settings import (
    ACK_MODES,
    DEFAULT_ACK_TIMEOUT,
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
from rpisensor.roles._options.base import non_negative_float
from rpisensor.roles._options.control import OutputOptions

#: The broker options, which mean nothing without a broker URL.
BROKER_OPTIONS = ("mqtt-ca", "mqtt-cert", "mqtt-key", "mqtt-credentials", "mqtt-prefix")
#: The options that mean nothing without report's --mqtt.
_NEEDS_MQTT = (*BROKER_OPTIONS, "mqtt-discovery", "ha-prefix", "ack", "ack-timeout")


class BrokerOptions(usage.Options):
    """Where the MQTT broker is and how to reach it: TLS, credentials, the topics' prefix."""

    optParameters = [
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
         f"The first topic level(s) of the Pis' topics (default {DEFAULT_PREFIX}): "
         "PREFIX/DEVICE/stream, PREFIX/DEVICE/NAME/state, ... Example: --mqtt-prefix home/pis"],
    ]  # fmt: skip

    #: Said at start-up (a world-readable secret).
    mqtt_warning: str | None = None

    def broker_given(self, *urls: str) -> None:
        """Check the broker options, where one of the options C{urls} names a broker (else they are refused)."""
        given = [option for option in urls if self[option]]
        if not given:
            stray = [f"--{name}" for name in BROKER_OPTIONS if self[name] is not None]
            if stray:
                raise usage.UsageError(f"{stray[0]} needs --{urls[0]} URL (the MQTT broker)")
            return
        self["mqtt-prefix"] = self["mqtt-prefix"] or DEFAULT_PREFIX
        try:
            check_topic_prefix("--mqtt-prefix", self["mqtt-prefix"])
        except SettingsError as e:
            raise usage.UsageError(str(e)) from None
        for option in given:
            self[f"{option}-broker"] = self.broker(option)

    def broker(self, option: str) -> Broker:
        """The broker of C{--OPTION URL} with the TLS and credential options."""
        try:
            tls, host, port = parse_url(self[option])
        except SettingsError as e:
            raise usage.UsageError(f"--{option}: {e}") from None
        for name in ("mqtt-ca", "mqtt-cert", "mqtt-key"):
            path = self[name]
            if path is None:
                continue
            if not tls:
                raise usage.UsageError(f"--{name} needs an mqtts:// broker URL (TLS), got {self[option]}")
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
            self.mqtt_warning = warning
        return Broker(host, port, tls, self["mqtt-ca"], self["mqtt-cert"], self["mqtt-key"], username, password)



class MQTTOptions(BrokerOptions, OutputOptions):
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
         "only once the broker acknowledged it, or with --ack end-to-end a collector), keep each "
         "input's, sensor's and output's state there for Home Assistant, and announce them by its "
         "MQTT discovery. Instead of --connect. Examples: --mqtt mqtt://192.168.1.10  "
         "--mqtt mqtts://broker.lan:8883"],
        ["mqtt-discovery", None, None,
         "How the Pi is announced to Home Assistant: device (one config for the Pi, Home "
         "Assistant 2024.11 and later; the default), entity (one config per input, sensor and "
         "output) or none. Example: --mqtt-discovery entity"],
        ["ha-prefix", None, None,
         f"Home Assistant's discovery prefix (default {HA_PREFIX}); its status topic is "
         "PREFIX/status. Example: --ha-prefix ha"],
        ["ack", None, None,
         "What lets the outbox go of a reading: broker (the default: the broker's PUBACK, which "
         "a broker restarting without persistence or crashing can lose) or end-to-end (a "
         "collector's ack on PREFIX/DEVICE/ack, which collect --mqtt publishes once its database "
         "committed the reading). Example: --ack end-to-end"],
        ["ack-timeout", None, None,
         f"With --ack end-to-end: seconds a reading waits for a collector's ack before it is "
         f"published again, then twice that and so on (default {DEFAULT_ACK_TIMEOUT:g}). "
         "Example: --ack-timeout 30"],
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
        self.broker_given("mqtt")
        self["ha-prefix"] = self["ha-prefix"] or HA_PREFIX
        self["mqtt-discovery"] = self["mqtt-discovery"] or "device"
        try:
            check_topic_prefix("--ha-prefix", self["ha-prefix"])
        except SettingsError as e:
            raise usage.UsageError(str(e)) from None
        if self["mqtt-discovery"] not in DISCOVERY_MODES:
            raise usage.UsageError(
                f"--mqtt-discovery must be one of {', '.join(DISCOVERY_MODES)}, got {self['mqtt-discovery']!r}"
            )
        self["ack"] = self["ack"] or "broker"
        if self["ack"] not in ACK_MODES:
            raise usage.UsageError(f"--ack must be one of {', '.join(ACK_MODES)}, got {self['ack']!r}")
        if self["ack-timeout"] is not None and self["ack"] != "end-to-end":
            raise usage.UsageError("--ack-timeout is for --ack end-to-end")
        timeout = non_negative_float("ack-timeout", self["ack-timeout"] or f"{DEFAULT_ACK_TIMEOUT:g}")
        if timeout <= 0:
            raise usage.UsageError("--ack-timeout must be more than 0 seconds")
        self["ack-timeout"] = timeout
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
                ack=self["ack"], ack_timeout=self["ack-timeout"],
            )  # fmt: skip
        except SettingsError as e:
            raise SystemExit(f"rpisensor: --mqtt: {e}") from None
