"""
A real Mosquitto broker for the MQTT tests, and a subscriber that records
what it gets.

    broker = Mosquitto.start(persistence=False)   # a free port on 127.0.0.1
    self.addCleanup(broker.close)
    seen = Subscriber(broker.port, ["rpisensor/#"])
    self.addCleanup(seen.close)
    ...
    broker.stop(); broker.restart()               # the same port, the same files

Debian's C{mosquitto} (C{.ci/run} installs it). Each broker runs with a
generated configuration (C{listener PORT 127.0.0.1}, C{allow_anonymous true}
unless a password file is given, optionally TLS) in a directory of its own;
as root it drops to the C{mosquitto} user (C{nobody} where that user does
not exist), so the directory is given to that user. Where the binary is
absent the tests skip, saying so, unless C{RPISENSOR_MOSQUITTO_REQUIRED} is
set (as CI sets it): then they fail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

from tests.processes import DEADLINE, connect_tcp, free_port, wait_until

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def missing(reason: str) -> Exception:
    """Skip, unless CI installed Mosquitto (RPISENSOR_MOSQUITTO_REQUIRED): then a missing piece fails."""
    from twisted.trial.unittest import SkipTest

    if os.environ.get("RPISENSOR_MOSQUITTO_REQUIRED"):
        return AssertionError(f"RPISENSOR_MOSQUITTO_REQUIRED is set, but {reason}")
    return SkipTest(reason)


def require_mosquitto() -> str:
    if MOSQUITTO is None:
        raise missing("these tests need Debian's mosquitto broker (apt-get install mosquitto)")
    return MOSQUITTO


def _broker_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("mosquitto", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


@dataclass
class TLSFiles:
    """A TLS listener: the CA clients are checked against, the broker's certificate and key."""

    ca: str
    cert: str
    key: str
    require_certificate: bool = False


@dataclass
class Mosquitto:
    """One broker process; L{stop} and L{restart} keep its port and files."""

    port: int
    directory: str
    persistence: bool = False
    password_file: str | None = None
    tls: TLSFiles | None = None
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    starts: int = 0

    @classmethod
    def start(cls, persistence: bool = False, **options) -> Mosquitto:
        require_mosquitto()
        directory = tempfile.mkdtemp(prefix="rpisensor-mosquitto-")  # in /tmp: the broker's user reaches it
        user = _broker_user()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        os.chmod(directory, 0o755)
        broker = cls(free_port(), directory, persistence, **options)
        broker.restart()
        return broker

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "mosquitto.log")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _config(self) -> str:
        lines = [f"listener {self.port} 127.0.0.1"]
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}",
                      f"require_certificate {'true' if self.tls.require_certificate else 'false'}"]  # fmt: skip
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        lines.append(f"persistence {'true' if self.persistence else 'false'}")
        if self.persistence:
            lines += [f"persistence_location {self.directory}/", "autosave_interval 1"]
        user = _broker_user()
        if user is not None:
            lines.append(f"user {user}")
        # No limit on what waits for a slow subscriber (Mosquitto's default, 1000, drops the rest
        # while a test's subscriber in Python reads a catch-up of thousands a second).
        lines += ["max_queued_messages 0", "log_type all", *self.extra]
        return "\n".join(lines) + "\n"

    def restart(self) -> None:
        """Start it (again), and wait until it takes connections."""
        config = os.path.join(self.directory, "mosquitto.conf")
        with open(config, "w") as f:
            f.write(self._config())
        os.chmod(config, 0o644)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {self.starts}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", config], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory,
            )  # fmt: skip

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.process.returncode}:\n{self.log()}")
            try:
                connect_tcp(self.port, timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(up, describe=self.log)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: it saves its persistence file; SIGKILL: it is killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(DEADLINE)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retained: bool


class Subscriber:
    """
    A paho client in a thread of its own, subscribed (QoS 1) to C{topics},
    recording every message in order. Its session is persistent (clean start
    off, an hour's expiry), so a broker with persistence keeps what it
    missed; it subscribes again at every connect, for a broker without.
    """

    def __init__(self, port: int, topics: list[str], client_id: str | None = None, **tls) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.topics = topics
        self.messages: list[Message] = []
        self.subscriptions = 0
        self._lock = threading.Lock()
        client_id = client_id or f"test-subscriber-{os.getpid()}-{id(self)}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.client.on_subscribe = self._subscribed
        self.client.reconnect_delay_set(0.1, 0.5)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, 10, clean_start=False, properties=properties)
        self.client.loop_start()
        wait_until(lambda: self.subscriptions > 0)

    def _connected(self, client, userdata, flags, reason, properties) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _subscribed(self, client, userdata, mid, reasons, properties) -> None:
        with self._lock:
            self.subscriptions += 1

    def _message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(Message(message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        got = self.on(topic)
        return got[-1].payload if got else None

    def wait_for(self, topic: str, payload: bytes, timeout: float = DEADLINE, describe=None) -> None:
        wait_until(lambda: self.last(topic) == payload, timeout,
                   describe or (lambda: f"last on {topic}: {self.last(topic)!r}"))  # fmt: skip

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained(port: int, topic: str, timeout: float = 3.0) -> bytes | None:
    """What the broker holds retained on C{topic} (a fresh subscriber reads it), or C{None}."""
    seen = Subscriber(port, [topic], client_id=f"test-retained-{time.monotonic_ns()}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [m for m in seen.on(topic) if m.retained]
            if got:
                return got[-1].payload
            time.sleep(0.02)
        return None
    finally:
        seen.close()


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish one message (QoS 1) and wait for the broker's PUBACK."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port, 10)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(DEADLINE)
    finally:
        client.loop_stop()
        client.disconnect()
