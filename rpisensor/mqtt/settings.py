"""
Where the broker is and how to talk to it (C{mqtt://} or C{mqtts://} with a
CA, a client certificate, a user name and password read from a file), and
what the Pi publishes there: the topics' prefix, Home Assistant's discovery.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: The ports of the two schemes when the URL names none (IANA's).
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: How C{--mqtt-discovery} announces the Pi to Home Assistant.
DISCOVERY_MODES = ("device", "entity", "none")
#: Home Assistant's default discovery prefix (its MQTT options can change it).
HA_PREFIX = "homeassistant"
DEFAULT_PREFIX = "rpisensor"
#: What lets the outbox go of a reading (C{--ack}): the broker's PUBACK, or a collector's commit.
ACK_MODES = ("broker", "end-to-end")
#: Seconds a reading waits for a collector's ack before it is published again (C{--ack-timeout}).
DEFAULT_ACK_TIMEOUT = 10.0
#: A topic level of our own: no wildcards, no NUL, not empty.
_TOPIC = re.compile(r"[^+#\0]+\Z")


class SettingsError(ValueError):
    """A setting that cannot work; the message says which and why."""


@dataclass(frozen=True)
class Broker:
    """
    One MQTT broker.

    @ivar tls: C{mqtts://}: TLS, the broker's certificate checked against
        C{ca} (a PEM file) or the system's CAs, and its name against C{host}.
    @ivar certificate: a client certificate (PEM) to show, with its C{key}
        (PEM; the certificate's file when it holds the key too).
    @ivar username: with C{password}, read from a file (L{read_credentials}).
    """

    host: str
    port: int
    tls: bool = False
    ca: str | None = None
    certificate: str | None = None
    key: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """How the log names it: C{mqtts://broker.lan:8883} (never a secret)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True)
class MQTTSettings:
    """
    How the Pi appears on MQTT.

    @ivar device: this Pi's id: in every topic, the stream's messages and
        Home Assistant's device.
    @ivar prefix: the first level(s) of every topic but Home Assistant's.
    @ivar discovery: C{device} (one config for the Pi, HA 2024.11 and later),
        C{entity} (one per input, sensor and output), C{none}.
    @ivar ha_prefix: Home Assistant's discovery prefix; its status topic is
        C{HA_PREFIX/status}.
    @ivar classes: Home Assistant device classes by input or sensor name
        (C{door}, C{motion}, C{temperature}...).
    @ivar control: outputs may be switched from MQTT (C{--mqtt-control}).
    @ivar keepalive: seconds of MQTT keep-alive: a dead link is noticed
        within about twice this, and the broker sends the last will after
        one and a half times this.
    @ivar window: the most stream messages published and not yet
        acknowledged (the broker's receive maximum lowers it; end to end,
        not yet confirmed by a collector).
    @ivar ack: C{broker}: a reading is let go of on the broker's PUBACK;
        C{end-to-end}: on a collector's ack, once its database committed it.
    @ivar ack_timeout: end to end: seconds a reading waits for its ack before
        it is published again (then longer each time).
    """

    broker: Broker
    device: str
    prefix: str = DEFAULT_PREFIX
    discovery: str = "device"
    ha_prefix: str = HA_PREFIX
    classes: Mapping[str, str] = field(default_factory=dict)
    control: bool = False
    keepalive: int = 15
    window: int = 5000
    max_delay: float = 60.0
    connect_timeout: float = 10.0
    ack: str = "broker"
    ack_timeout: float = DEFAULT_ACK_TIMEOUT

    def __post_init__(self) -> None:
        if self.ack not in ACK_MODES:
            raise SettingsError(f"ack must be one of {', '.join(ACK_MODES)}, got {self.ack!r}")
        if not self.ack_timeout > 0:
            raise SettingsError(f"the ack timeout must be more than 0 seconds, got {self.ack_timeout!r}")
        check_topic_prefix("the topic prefix", self.prefix)
        check_topic_prefix("the discovery prefix", self.ha_prefix)
        if self.discovery not in DISCOVERY_MODES:
            raise SettingsError(f"discovery must be one of {', '.join(DISCOVERY_MODES)}, got {self.discovery!r}")
        if not _TOPIC.match(self.device) or "/" in self.device:
            raise SettingsError(f"the device id {self.device!r} cannot be a topic level")

    @property
    def client_id(self) -> str:
        """The MQTT client id: one per Pi, so a second connection of the same Pi replaces the first."""
        return f"rpisensor-{self.device}"


def check_topic_prefix(what: str, prefix: str) -> None:
    """A prefix is one or more topic levels, without wildcards, leading or trailing C{/}."""
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or "//" in prefix or not _TOPIC.match(prefix):
        raise SettingsError(
            f"{what} {prefix!r} must be topic levels without wildcards (+, #) or empty levels, "
            "e.g. rpisensor or home/pis"
        )


def parse_url(text: str) -> tuple[bool, str, int]:
    """
    C{mqtt://HOST[:PORT]} or C{mqtts://HOST[:PORT]} as C{(tls, host, port)}.

    @raise SettingsError: another scheme, no host, a bad port, or a user name
        or password in it (they belong in a file: C{--mqtt-credentials}).
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as e:
        raise SettingsError(f"{text!r} is not a broker URL ({e}); e.g. mqtt://broker.lan:1883") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise SettingsError(f"{text!r}: the scheme must be mqtt:// or mqtts:// (TLS), e.g. mqtt://broker.lan:1883")
    if parts.username is not None or parts.password is not None:
        raise SettingsError(
            f"{scheme}://...: no user name or password in the URL (a command line is visible to every "
            "user of the machine): put them in a file, the user name on its first line and the "
            "password on its second, and give --mqtt-credentials FILE"
        )
    if not parts.hostname:
        raise SettingsError(f"{text!r} names no broker host, e.g. {scheme}://broker.lan")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingsError(f"{text!r}: a broker URL has no path or query, e.g. {scheme}://broker.lan:1883")
    return scheme == "mqtts", parts.hostname, port or DEFAULT_PORTS[scheme]


def read_credentials(path: str) -> tuple[str, str, str | None]:
    """
    The user name (first line) and password (second line) in C{path}, and a
    warning if others may read the file.

    @raise SettingsError: it cannot be read, or has no user name.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"cannot read the credentials file {path}: {e}") from None
    if not lines or not lines[0].strip():
        raise SettingsError(
            f"the credentials file {path} has no user name: its first line is the user name, its "
            "second the password"
        )
    warning = None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = f"the credentials file {path} can be read by other users: chmod 600 {path}"
    return lines[0].strip(), lines[1] if len(lines) > 1 else "", warning
