"""
C{report --mqtt} against a real Mosquitto (see L{tests.mosquitto}), as a user
runs it: C{twistd} processes, a subscriber that records what it gets, and
the broker stopped, restarted and killed under them.

  - Nothing lost, nothing twice: the broker stopped for 30 s and restarted,
    with persistence off and on; the link cut (FIN, RST) and silenced; the
    reporter SIGKILLed while it publishes a backlog. After deduplication on
    C{(device, stream, seq)} the subscriber holds every reading once, in
    order, and what it lacks is still in the outbox.
  - Home Assistant: the discovery config checked against the keys its
    documentation lists, availability (birth, last will when the reporter is
    killed), announcing again on C{homeassistant/status online}, a removed
    input's entity removed, switches driving an output only with
    C{--mqtt-control}, a deadman going safe when the broker dies.
  - One connection in this process (the reactor driving paho): PUBACKs,
    the will on abort, TLS with a client certificate, a password file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from contextlib import closing

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rpisensor.mqtt.client import ConnectFailed, Handler, PahoConnection
from rpisensor.mqtt.messages import parse_stream_message
from rpisensor.mqtt.settings import Broker
from rpisensor.entries import Gap, Reading
from rpisensor.stream.journal import Journal
from rpisensor.wire.v2 import format_timestamp
from tests.faultproxy import FaultProxy
from tests.mosquitto import Mosquitto, Subscriber, TLSFiles, publish, require_mosquitto, retained
from tests.processes import Twistd, connect_unix, request, wait_until
from tests.test_mqtt import check_component

DEVICE = "pi-test"
BASE = f"rpisensor/{DEVICE}"
CONFIG = f"homeassistant/device/rpisensor_{DEVICE}/config"
#: Seconds the broker stays away in the outage test (as the issue asks).
OUTAGE = 30.0


def reporter(port: int, *options: str, cwd: str | None = None, env=None) -> Twistd:
    """C{twistd rpisensor report --mqtt} on simulated pins, with its status listener in its directory."""
    return Twistd(
        "rpisensor", "report", "--mqtt", f"mqtt://127.0.0.1:{port}", "--gpio", "sim", "--device", DEVICE,
        "--outbox", "outbox.sqlite", "--status-listen", "unix:status.sock", *options, cwd=cwd, env=env,
    )  # fmt: skip


def short_directory(case: SynchronousTestCase) -> str:
    """A new directory in /tmp: a unix socket's path in it stays short (108 bytes at most)."""
    directory = tempfile.mkdtemp(prefix="rpisensor-mqtt-")
    case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


def status(twistd: Twistd) -> dict[str, str]:
    with connect_unix(os.path.join(twistd.directory, "status.sock")) as sock:
        line = request(sock, b"status").decode().rstrip("\0")
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def drained(twistd: Twistd) -> bool:
    try:
        return int(status(twistd).get("outbox", "-1")) == 0
    except OSError:
        return False


def stream_entries(seen: Subscriber) -> list[Reading | Gap]:
    entries = []
    for message in seen.on(f"{BASE}/stream"):
        device, entry = parse_stream_message(message.payload)
        assert device == DEVICE
        entries.append(entry)
    return entries


def outbox_left(directory: str) -> tuple[set[int], int]:
    """The seqs still in a stopped reporter's outbox, and the last seq it gave."""
    with closing(sqlite3.connect(os.path.join(directory, "outbox.sqlite"))) as db:
        rows = db.execute("SELECT seq, COALESCE(last, seq) FROM entries").fetchall()
    left = set()
    for first, last in rows:
        left.update(range(first, last + 1))
    return left, max((last for _, last in rows), default=0)


def check_once_in_order(case: SynchronousTestCase, seen: Subscriber, directory: str) -> int:
    """
    Every reading the stopped reporter ever took is in the subscriber's view
    (deduplicated on seq: one stream, one device) or still in its outbox; the
    view is 1..N without a hole, first copies in order, repeated copies
    identical. Returns N.
    """
    left, last = outbox_left(directory)
    # The broker acknowledges a reading to the reporter before it has passed it on to this
    # subscriber: a drained outbox does not mean the view has caught up yet.
    wait_until(lambda: {entry.seq for entry in stream_entries(seen)} | left >= set(range(1, last + 1)),
               describe=lambda: f"{len(seen.on(f'{BASE}/stream'))} stream messages seen, last seq {last}")  # fmt: skip
    first_copies: dict[int, Reading] = {}
    order = []
    for entry in stream_entries(seen):
        case.assertIsInstance(entry, Reading, "no gap: the outbox never overflowed")
        if entry.seq in first_copies:
            case.assertEqual(first_copies[entry.seq], entry, "a repeated seq is the same reading")
            continue
        first_copies[entry.seq] = entry
        order.append(entry.seq)
    case.assertEqual(order, sorted(order), "first copies in order")
    count = len(order)
    case.assertEqual(order, list(range(1, count + 1)), "no hole in the subscriber's view")
    case.assertEqual(set(order) | left, set(range(1, last + 1)), "each reading delivered or still in the outbox")
    streams = {reading.stream for reading in first_copies.values()}
    case.assertEqual(len(streams), 1)
    return count


class NothingLostTests(SynchronousTestCase):
    """Every reading once, in order, across outages, cuts and kills."""

    def setUp(self) -> None:
        require_mosquitto()

    def start_pair(self, persistence: bool):
        broker = Mosquitto.start(persistence=persistence)
        self.addCleanup(broker.close)
        proxy = FaultProxy(broker.port)
        self.addCleanup(proxy.close)
        seen = Subscriber(broker.port, [f"{BASE}/stream"])
        self.addCleanup(seen.close)
        # A button pressed and released 10 times a second: 20 readings a second.
        twistd = reporter(proxy.port, "--on-change", "--sim-pattern", "button=0.05,0.05", "--max-delay", "3",
                          "--dead-peer-timeout", "4")  # fmt: skip
        self.addCleanup(twistd.close)
        return broker, proxy, seen, twistd

    def finish(self, twistd: Twistd, seen: Subscriber, at_least: int) -> int:
        wait_until(lambda: drained(twistd), describe=twistd.log)
        now = status(twistd)
        self.assertEqual((now["connected"], now["protocol"]), ("yes", "mqtt"), "the status speaks of the broker")
        self.assertNotEqual(now["last_ack"], "none", "the broker's PUBACKs count as acknowledgements")
        twistd.stop_cleanly()
        count = check_once_in_order(self, seen, twistd.directory)
        self.assertGreaterEqual(count, at_least)
        firsts = {entry.seq: entry.value for entry in reversed(stream_entries(seen))}
        values = [firsts[seq] for seq in sorted(firsts)]
        self.assertTrue(all(a != b for a, b in zip(values, values[1:])), "each reading a change of the button")
        self.assertNotIn("Traceback", twistd.log())
        return count

    def test_broker_away_30_seconds(self) -> None:
        """
        Two brokers, persistence off and on, each stopped for 30 s and started
        again while its reporter samples: every reading reaches the subscriber.
        """
        pairs = [self.start_pair(persistence) for persistence in (False, True)]
        for broker, proxy, seen, twistd in pairs:
            wait_until(lambda: len(seen.on(f"{BASE}/stream")) >= 20, describe=twistd.log)
        for broker, proxy, seen, twistd in pairs:
            proxy.refuse(True)  # the reporter comes back only once the subscriber is back
            broker.stop()
        for broker, proxy, seen, twistd in pairs:
            twistd.wait_for("Disconnected from the MQTT broker")
        before = [int(status(twistd)["outbox"]) for *_, twistd in pairs]
        for *_, twistd in pairs:
            self.assertEqual((status(twistd)["connected"], status(twistd)["protocol"]), ("no", "mqtt"))
        time.sleep(OUTAGE)  # the outage itself: nothing to wait for
        for (broker, proxy, seen, twistd), waiting in zip(pairs, before):
            self.assertGreater(int(status(twistd)["outbox"]), waiting + 100, "it kept sampling meanwhile")
            subscribed = seen.subscriptions
            broker.restart()
            wait_until(lambda: seen.subscriptions > subscribed, describe=broker.log)
            proxy.refuse(False)
        for broker, proxy, seen, twistd in pairs:
            self.finish(twistd, seen, at_least=600)

    def test_link_cut_and_silenced(self) -> None:
        """Cuts with FIN and RST, and a link gone silent: reconnects, republishes, loses nothing."""
        broker, proxy, seen, twistd = self.start_pair(persistence=False)
        for how in ("rst", "fin", "rst"):
            have = len(seen.on(f"{BASE}/stream"))
            wait_until(lambda: len(seen.on(f"{BASE}/stream")) >= have + 20, describe=twistd.log)
            proxy.cut(how)
        have = len(seen.on(f"{BASE}/stream"))
        wait_until(lambda: len(seen.on(f"{BASE}/stream")) >= have + 20, describe=twistd.log)
        proxy.silence()  # nothing either way: the keep-alive (half of --dead-peer-timeout) notices
        lost = twistd.log().count("Disconnected from the MQTT broker")
        wait_until(lambda: twistd.log().count("Disconnected from the MQTT broker") > lost, timeout=60,
                   describe=twistd.log)  # fmt: skip
        proxy.restore()
        have = len(seen.on(f"{BASE}/stream"))
        wait_until(lambda: len(seen.on(f"{BASE}/stream")) >= have + 20, describe=twistd.log)
        self.assertGreaterEqual(twistd.log().count("Connected to the MQTT broker"), 5)
        self.finish(twistd, seen, at_least=100)

    def test_reporter_killed_mid_publish(self) -> None:
        """SIGKILL while a backlog of 20,000 goes out; the next start publishes the rest (some twice)."""
        broker = Mosquitto.start()
        self.addCleanup(broker.close)
        seen = Subscriber(broker.port, [f"{BASE}/stream", f"{BASE}/availability"])
        self.addCleanup(seen.close)
        directory = short_directory(self)
        backlog = 20_000
        journal = Journal(os.path.join(directory, "outbox.sqlite"))
        journal.open()
        journal.append([Reading(ts=format_timestamp(1.8e9 + i), synced=True, sensor="button", value=i % 2,
                                text=f"r{i}") for i in range(backlog)])  # fmt: skip
        journal.close()
        options = ("--on-change", "--interval", "3600")
        first = reporter(broker.port, *options, cwd=directory)
        self.addCleanup(first.close)
        wait_until(lambda: len(seen.on(f"{BASE}/stream")) >= backlog // 4, describe=first.log)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        seen.wait_for(f"{BASE}/availability", b"offline")
        second = reporter(broker.port, *options, cwd=directory)
        self.addCleanup(second.close)
        wait_until(lambda: drained(second), timeout=60, describe=second.log)
        second.stop_cleanly()
        count = check_once_in_order(self, seen, directory)
        self.assertGreaterEqual(count, backlog)


    def test_broker_limits(self) -> None:
        """A broker that takes 3 messages in flight and small packets: 2 for the stream, all arrive."""
        broker = Mosquitto.start(extra=["max_inflight_messages 3"])
        self.addCleanup(broker.close)
        seen = Subscriber(broker.port, [f"{BASE}/stream"])
        self.addCleanup(seen.close)
        directory = short_directory(self)
        journal = Journal(os.path.join(directory, "outbox.sqlite"))
        journal.open()
        journal.append([Reading(ts=format_timestamp(1.8e9 + i), synced=True, sensor="button", value=i % 2,
                                text=f"r{i}") for i in range(500)])  # fmt: skip
        journal.close()
        twistd = reporter(broker.port, "--on-change", "--interval", "3600", cwd=directory)
        self.addCleanup(twistd.close)
        twistd.wait_for(r"receive maximum 3, .*: 50\d readings to publish from the outbox, 2 at a time")
        wait_until(lambda: drained(twistd), describe=twistd.log)
        twistd.stop_cleanly()
        self.assertGreaterEqual(check_once_in_order(self, seen, directory), 500)


class HomeAssistantTests(SynchronousTestCase):
    """What Home Assistant sees: discovery, availability, states, switches."""

    def setUp(self) -> None:
        require_mosquitto()
        self.broker = Mosquitto.start()
        self.addCleanup(self.broker.close)
        self.seen = Subscriber(self.broker.port, ["rpisensor/#", "homeassistant/#"])
        self.addCleanup(self.seen.close)
        sysfs = os.path.abspath(self.mktemp())
        zone = os.path.join(sysfs, "class", "thermal", "thermal_zone0")
        os.makedirs(zone)
        with open(os.path.join(zone, "temp"), "w") as f:
            f.write("41200\n")
        self.sensor = ("--sysfs-root", sysfs, "--sensor", "cpu=cpu,interval=0.5")

    def start(self, *options: str, cwd: str | None = None) -> Twistd:
        twistd = reporter(self.broker.port, "--on-change", *options, cwd=cwd)
        self.addCleanup(twistd.close)
        return twistd

    def config(self) -> dict:
        wait_until(lambda: self.seen.last(CONFIG))
        return json.loads(self.seen.last(CONFIG))

    def test_discovery_availability_and_states(self) -> None:
        """The device config as documented, birth and will, each entity's retained state."""
        twistd = self.start("--input", "button=24", "--input", "door=26,pull=up,active=high", "--ha-class",
                            "door=door", *self.sensor, "--output", "led=12", "--mqtt-control")  # fmt: skip
        config = self.config()
        self.assertEqual(set(config["cmps"]), {"button", "door", "cpu", "led"})
        for component in config["cmps"].values():
            check_component(self, component["p"], component, device_based=True)
        self.assertEqual(config["cmps"]["door"]["device_class"], "door")
        self.assertEqual(config["cmps"]["cpu"]["device_class"], "temperature")
        self.seen.wait_for(f"{BASE}/availability", b"online")
        self.seen.wait_for(f"{BASE}/button/state", b"OFF")
        self.seen.wait_for(f"{BASE}/led/state", b"OFF")
        self.seen.wait_for(f"{BASE}/cpu/state", b"41.2")
        # Retained, as a Home Assistant that starts later sees them:
        self.assertEqual(retained(self.broker.port, f"{BASE}/cpu/state"), b"41.2")
        self.assertEqual(json.loads(retained(self.broker.port, CONFIG)), config)
        twistd.process.send_signal(signal.SIGKILL)
        twistd.process.wait()
        self.seen.wait_for(f"{BASE}/availability", b"offline")
        self.assertEqual(retained(self.broker.port, f"{BASE}/availability"), b"offline")

    def test_clean_stop_says_offline(self) -> None:
        twistd = self.start()
        self.seen.wait_for(f"{BASE}/availability", b"online")
        twistd.stop_cleanly()
        self.assertEqual(retained(self.broker.port, f"{BASE}/availability"), b"offline")

    def test_announces_again_when_home_assistant_comes_online(self) -> None:
        self.start("--mqtt-discovery", "entity")
        topic = f"homeassistant/binary_sensor/rpisensor_{DEVICE}/button/config"
        wait_until(lambda: self.seen.last(topic))
        publish(self.broker.port, topic, b"", retain=True)  # as if Home Assistant lost it
        self.assertIsNone(retained(self.broker.port, topic, timeout=0.5))
        publish(self.broker.port, "homeassistant/status", b"online")
        wait_until(lambda: retained(self.broker.port, topic), describe=lambda: str(self.seen.on(topic)))
        check_component(self, "binary_sensor", json.loads(retained(self.broker.port, topic)), device_based=False)

    def test_removed_input_is_removed(self) -> None:
        """Restarted without an input: its component removed (device-based), or its config emptied (per entity)."""
        directory = short_directory(self)
        first = self.start("--input", "button=24", "--input", "door=26", cwd=directory)
        self.assertEqual(set(self.config()["cmps"]), {"button", "door"})
        self.seen.wait_for(f"{BASE}/door/state", b"OFF")
        first.stop_cleanly()
        second = self.start("--input", "button=24", cwd=directory)
        wait_until(lambda: set(json.loads(self.seen.last(CONFIG))["cmps"]) == {"button"})
        removal = [json.loads(m.payload) for m in self.seen.on(CONFIG) if not m.retained]
        self.assertIn({"p": "binary_sensor"}, [c["cmps"].get("door") for c in removal])
        self.assertIsNone(retained(self.broker.port, f"{BASE}/door/state", timeout=0.5))
        second.stop_cleanly()
        # The same, per entity: the config of the gone input is emptied.
        third = self.start("--mqtt-discovery", "entity", "--input", "door=26", cwd=directory)
        door = f"homeassistant/binary_sensor/rpisensor_{DEVICE}/door/config"
        wait_until(lambda: retained(self.broker.port, door, timeout=0.5))
        # The device config is emptied once the entity configs are out (migrate first, then empty).
        wait_until(lambda: retained(self.broker.port, CONFIG, timeout=0.5) is None)
        third.stop_cleanly()
        self.start("--mqtt-discovery", "entity", "--input", "button=24", cwd=directory)
        wait_until(lambda: retained(self.broker.port, door, timeout=0.5) is None)
        self.assertTrue(retained(self.broker.port, f"homeassistant/binary_sensor/rpisensor_{DEVICE}/button/config"))

    def test_switch_only_with_control(self) -> None:
        """ON on the command topic drives the output with --mqtt-control; without, nothing happens."""
        directory = short_directory(self)
        twistd = self.start("--output", "led=12", cwd=directory)
        self.seen.wait_for(f"{BASE}/led/state", b"OFF")
        self.assertEqual(self.config()["cmps"]["led_state"]["p"], "binary_sensor")
        publish(self.broker.port, f"{BASE}/led/set", b"ON")
        # A later message from the reporter shows it had the command's chance: still OFF.
        publish(self.broker.port, "homeassistant/status", b"online")
        twistd.wait_for("announcing this Pi again")
        self.assertEqual(self.seen.last(f"{BASE}/led/state"), b"OFF")
        self.assertNotIn("Control command", twistd.log())
        twistd.stop_cleanly()
        twistd = self.start("--output", "led=12", "--mqtt-control", cwd=directory)
        wait_until(lambda: "led" in json.loads(self.seen.last(CONFIG))["cmps"])
        publish(self.broker.port, f"{BASE}/led/set", b"ON")
        self.seen.wait_for(f"{BASE}/led/state", b"ON")
        twistd.wait_for(r"Control command from MQTT \(mqtt://127.0.0.1:\d+, rpisensor/pi-test/\+/set\): set led on")
        publish(self.broker.port, f"{BASE}/led/set", b"OFF")
        self.seen.wait_for(f"{BASE}/led/state", b"OFF")

    def test_deadman_safe_when_the_broker_dies(self) -> None:
        """A deadman switched on from MQTT goes safe when the broker is killed; the state says so after."""
        twistd = self.start("--output", "motor=16,ttl=60", "--mqtt-control", "--max-delay", "2")
        wait_until(lambda: "motor" in json.loads(self.seen.last(CONFIG) or b"{}").get("cmps", {}))
        publish(self.broker.port, f"{BASE}/motor/set", b"ON")
        self.seen.wait_for(f"{BASE}/motor/state", b"ON")
        self.broker.stop(signal.SIGKILL)
        twistd.wait_for("Output motor back to its safe level \\(off\\): MQTT .*, which drove it, disconnected")
        self.broker.restart()
        wait_until(lambda: retained(self.broker.port, f"{BASE}/motor/state", timeout=0.5) == b"OFF",
                   describe=twistd.log)  # fmt: skip


class EmulatedPiTests(SynchronousTestCase):
    """The real RPi.GPIO on an emulated Pi 3: a pin's change becomes a retained state."""

    def test_pin_change_to_retained_state(self) -> None:
        from tests.emulated_pi import EmulatedPi, unavailable_reason
        from tests.test_gpio_rpi import make_temp_dir

        require_mosquitto()
        reason = unavailable_reason()
        if reason is not None:
            raise SkipTest(reason)
        directory = make_temp_dir(self)
        pi = EmulatedPi(directory)
        reason = pi.probe()
        if reason is not None:
            raise SkipTest(reason)
        broker = Mosquitto.start()
        self.addCleanup(broker.close)
        seen = Subscriber(broker.port, [f"{BASE}/#"])
        self.addCleanup(seen.close)
        pi.set_levels(high={8})  # the button (BCM 8, pull-up, active low) released
        twistd = Twistd(
            "rpisensor", "report", "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--gpio", "rpi", "--device",
            DEVICE, "--outbox", "outbox.sqlite", "--status-listen", "none", "--on-change", "--interval", "0.05",
            cwd=str(directory), wrapper=tuple(pi.command([])),
        )  # fmt: skip
        self.addCleanup(twistd.close)
        seen.wait_for(f"{BASE}/button/state", b"OFF", describe=twistd.log)
        for pressed in (True, False, True):
            pi.set_levels(high=set() if pressed else {8})
            seen.wait_for(f"{BASE}/button/state", b"ON" if pressed else b"OFF", describe=twistd.log)
        self.assertEqual(retained(broker.port, f"{BASE}/button/state"), b"ON")
        texts = [entry.text for entry in stream_entries(seen)]
        self.assertEqual(texts[-3:], ["Button pressed", "Button released", "Button pressed"])
        self.assertIn("RPi.GPIO", twistd.log())
        twistd.stop_cleanly()


# -- one connection, in this process ------------------------------------------------------------


class Recorder(Handler):
    def __init__(self) -> None:
        self.acks: list[tuple[int, str | None]] = []
        self.messages: list[tuple[str, bytes]] = []
        self.lost_with: Deferred = Deferred()
        self.waiting: list[tuple[object, Deferred]] = []

    def published(self, mid, refused):
        self.acks.append((mid, refused))
        self._check()

    def message(self, topic, payload, retained, mid):
        self.messages.append((topic, payload))
        self._check()

    def lost(self, reason):
        self.lost_with.callback(reason)

    def until(self, condition) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append((condition, d))
        self._check()
        return d

    def _check(self) -> None:
        for item in list(self.waiting):
            if item[0]():
                self.waiting.remove(item)
                item[1].callback(None)


def _broker(**options) -> Mosquitto:
    try:
        require_mosquitto()
    except SkipTest:
        raise
    return Mosquitto.start(**options)


def _connection(reactor, broker: Broker, handler: Handler, client_id: str = "rpisensor-test") -> PahoConnection:
    return PahoConnection(reactor, broker, client_id, handler, ("test/will", b"gone"), 10, reactor.getThreadPool(), 5.0)


@pytest_twisted.ensureDeferred
async def test_publish_acknowledged_and_will_on_abort(reactor) -> None:
    """PUBACKs come back for QoS 1; the receive maximum is read; abort makes the broker send the will."""
    broker = _broker()
    try:
        watcher = Recorder()
        watch = _connection(reactor, Broker("127.0.0.1", broker.port), watcher, "watcher")
        await watch.connect()
        watch.subscribe(["test/#"])
        await watcher.until(lambda: True)
        handler = Recorder()
        connection = _connection(reactor, Broker("127.0.0.1", broker.port), handler)
        limits = await connection.connect()
        assert limits.receive_maximum == 20  # Mosquitto's default
        mids = [connection.publish("test/data", f"{i}".encode()) for i in range(50)]
        await handler.until(lambda: len(handler.acks) == 50)
        assert sorted(mid for mid, _ in handler.acks) == sorted(mids)
        await watcher.until(lambda: len([m for m in watcher.messages if m[0] == "test/data"]) == 50)
        connection.abort()
        assert await handler.lost_with
        await watcher.until(lambda: ("test/will", b"gone") in watcher.messages)
        watch.disconnect()
        await watcher.lost_with
    finally:
        broker.close()


@pytest_twisted.ensureDeferred
async def test_tls_with_client_certificate(reactor) -> None:
    """mqtts:// to a broker that requires a client certificate; the wrong CA is refused, saying why."""
    from tests.certs import write_pki

    pki = write_pki(os.path.join(os.getcwd(), "pki"))
    for path in (pki.server_key, pki.server_cert, pki.ca_cert):
        os.chmod(path, 0o644)
    os.chmod(pki.directory, 0o755)
    home = os.path.dirname(pki.directory)
    while home not in ("/", ""):  # the broker's user must reach the files
        os.chmod(home, os.stat(home).st_mode | 0o111)
        home = os.path.dirname(home)
    broker = _broker(tls=TLSFiles(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True))
    try:
        good = Broker("localhost", broker.port, True, pki.ca_cert, pki.client_cert, pki.client_key)
        handler = Recorder()
        connection = _connection(reactor, good, handler)
        await connection.connect()
        connection.publish("test/tls", b"x")
        await handler.until(lambda: handler.acks)
        assert handler.acks[0][1] is None
        connection.disconnect()
        await handler.lost_with
        wrong_ca = Broker("localhost", broker.port, True, pki.other_ca_cert, pki.client_cert, pki.client_key)
        try:
            await _connection(reactor, wrong_ca, Recorder()).connect()
        except ConnectFailed as e:
            assert "certificate" in str(e), e
        else:
            raise AssertionError("a broker whose certificate the CA did not sign was accepted")
    finally:
        broker.close()


@pytest_twisted.ensureDeferred
async def test_password_file(reactor) -> None:
    """A broker with a password file: the right password connects, a wrong one is refused, saying so."""
    require_mosquitto()
    passwd = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")
    if passwd is None:
        raise SkipTest("needs mosquitto_passwd (Debian's mosquitto)")
    path = os.path.join(os.getcwd(), "passwords")
    subprocess.run([passwd, "-c", "-b", path, "pi", "s3cret"], check=True, capture_output=True)
    os.chmod(path, 0o644)
    os.chmod(os.getcwd(), 0o755)
    home = os.path.dirname(os.getcwd())
    while home not in ("/", ""):
        os.chmod(home, os.stat(home).st_mode | 0o111)
        home = os.path.dirname(home)
    broker = _broker(password_file=path)
    try:
        handler = Recorder()
        connection = _connection(reactor, Broker("127.0.0.1", broker.port, username="pi", password="s3cret"), handler)
        await connection.connect()
        connection.disconnect()
        await handler.lost_with
        try:
            await _connection(reactor, Broker("127.0.0.1", broker.port, username="pi", password="nope"),
                              Recorder()).connect()  # fmt: skip
        except ConnectFailed as e:
            assert "refused" in str(e) and "authorized" in str(e).lower(), e
        else:
            raise AssertionError("a wrong password was accepted")
    finally:
        broker.close()
