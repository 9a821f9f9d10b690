"""
The MQTT side of C{report} on Twisted's doubles, no broker: the stream's
messages (and a parser fuzzed), the topics, the settings and options,
Home Assistant's discovery payloads checked against the keys its
documentation lists per component, the steps that remove what the Pi no
longer has, the stream publisher's window and acknowledgements on an
in-memory outbox, the retained messages' coalescing, and switch commands.
"""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.control.controller import OutputController
from rpisensor.control.outputs import OutputSpec
from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.lograte import RateLimitedLog
from rpisensor.mqtt import discovery as ha
from rpisensor.mqtt.client import packet_size
from rpisensor.mqtt.control import MQTTControl
from rpisensor.mqtt.messages import MessageError, command_level, parse_stream_message, stream_message
from rpisensor.mqtt.outgoing import Outgoing
from rpisensor.mqtt.publisher import FETCH, StatePublisher, StreamPublisher
from rpisensor.mqtt.settings import SettingsError, parse_url, read_credentials
from rpisensor.mqtt.topics import Topics, node_id
from rpisensor.roles.report.options import ReportOptions
from rpisensor.stream.journal import Journal
from rpisensor.stream.journal_service import JournalService
from rpisensor.testing._runners import inline_runner
from rpisensor.entries import Gap, Reading

# -- Home Assistant's documented configuration keys, per component ---------------------------
# From Home Assistant's MQTT documentation (integrations/mqtt, binary_sensor.mqtt, sensor.mqtt,
# switch.mqtt). Options every MQTT entity takes:
COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device",
    "default_entity_id", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "origin", "payload_available",
    "payload_not_available", "platform", "qos", "unique_id",
}  # fmt: skip
DOCUMENTED = {
    "binary_sensor": COMMON | {"device_class", "expire_after", "force_update", "off_delay", "payload_off",
                               "payload_on", "state_topic", "value_template"},
    "sensor": COMMON | {"device_class", "expire_after", "force_update", "last_reset_value_template", "options",
                        "suggested_display_precision", "state_class", "state_topic", "unit_of_measurement",
                        "value_template"},
    "switch": COMMON | {"command_template", "command_topic", "device_class", "optimistic", "payload_off",
                        "payload_on", "retain", "state_off", "state_on", "state_topic", "value_template"},
}  # fmt: skip
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}, "switch": {"command_topic"}}
#: The device-based config's shared options (device and origin are required).
DEVICE_ROOT = {"device", "origin", "components", "availability", "availability_mode", "availability_template",
               "availability_topic", "payload_available", "payload_not_available", "command_topic",
               "state_topic", "qos", "encoding"}  # fmt: skip
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
               "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
#: The abbreviations Home Assistant expands (the ones a config of ours may use).
ABBREVIATIONS = {"dev": "device", "o": "origin", "cmps": "components", "p": "platform", "stat_t": "state_topic",
                 "cmd_t": "command_topic", "avty_t": "availability_topic", "uniq_id": "unique_id",
                 "dev_cla": "device_class", "unit_of_meas": "unit_of_measurement", "stat_cla": "state_class",
                 "ids": "identifiers", "mf": "manufacturer", "mdl": "model", "sw": "sw_version"}  # fmt: skip
#: Deprecated: stops working in Home Assistant 2026.4 (default_entity_id replaces it).
DEPRECATED = {"object_id", "obj_id"}


def expand(config: dict) -> dict:
    return {ABBREVIATIONS.get(key, key): value for key, value in config.items()}


def check_component(test, platform: str, config: dict, device_based: bool) -> None:
    """One entity's config has only documented keys, the required ones, and no deprecated one."""
    full = expand(config)
    test.assertFalse(DEPRECATED & set(config), config)
    undocumented = set(full) - DOCUMENTED[platform]
    test.assertFalse(undocumented, f"{platform}: keys Home Assistant does not document: {undocumented}")
    test.assertLessEqual(REQUIRED[platform], set(full), config)
    test.assertIn("unique_id", full)
    entity_id = full["default_entity_id"]
    test.assertRegex(entity_id, rf"^{platform}\.[a-z0-9_]+$")
    if device_based:
        test.assertEqual(full["platform"], platform)
    else:
        test.assertNotIn("platform", full)
        test.assertLessEqual(set(expand(full["device"])), DEVICE_KEYS)
        test.assertLessEqual(set(expand(full["origin"])), ORIGIN_KEYS)
    if "device_class" in full:
        known = ha.BINARY_SENSOR_CLASSES if platform == "binary_sensor" else ha.SENSOR_CLASSES
        if platform != "switch":
            test.assertIn(full["device_class"], known)


TOPICS = Topics("rpisensor", "pi-kitchen-3f2a9c")


def sample_entities(control: bool = True):
    return ha.entities(
        ["button", "door"], {"room": ("°C", "28-0316a2795aff"), "hum": ("%", "bme280:humidityrelative")},
        ["led"], {"door": "door"}, control,
    )  # fmt: skip


class DiscoveryPayloadTests(SynchronousTestCase):
    def test_device_based_config(self) -> None:
        """One config with dev, o and cmps; each component documented for its platform; no object_id."""
        config = ha.Discovery(TOPICS, sample_entities()).device_config()
        self.assertLessEqual(set(expand(config)), DEVICE_ROOT)
        self.assertLessEqual({"dev", "o", "cmps"}, set(config))
        self.assertLessEqual(set(expand(config["dev"])), DEVICE_KEYS)
        self.assertLessEqual(set(expand(config["o"])), ORIGIN_KEYS)
        self.assertIn("name", config["o"])
        components = config["cmps"]
        self.assertEqual(set(components), {"button", "door", "room", "hum", "led"})
        for component in components.values():
            check_component(self, component["p"], component, device_based=True)
        self.assertEqual(components["door"]["device_class"], "door")
        self.assertNotIn("device_class", components["button"])
        self.assertEqual((components["room"]["device_class"], components["room"]["unit_of_measurement"],
                          components["room"]["state_class"]), ("temperature", "°C", "measurement"))  # fmt: skip
        self.assertEqual(components["hum"]["device_class"], "humidity")
        led = components["led"]
        self.assertEqual((led["p"], led["command_topic"], led["state_topic"], led["optimistic"]),
                         ("switch", "rpisensor/pi-kitchen-3f2a9c/led/set", "rpisensor/pi-kitchen-3f2a9c/led/state",
                          False))  # fmt: skip
        self.assertEqual(config["availability_topic"], "rpisensor/pi-kitchen-3f2a9c/availability")
        self.assertEqual(components["button"]["default_entity_id"], "binary_sensor.pi_kitchen_3f2a9c_button")

    def test_per_entity_configs(self) -> None:
        """One config per entity, under its platform's topic, each with device, origin and availability."""
        configs = ha.Discovery(TOPICS, sample_entities(), "entity").entity_configs()
        self.assertEqual(
            set(configs),
            {f"homeassistant/{p}/rpisensor_pi-kitchen-3f2a9c/{k}/config" for p, k in
             [("binary_sensor", "button"), ("binary_sensor", "door"), ("sensor", "room"), ("sensor", "hum"),
              ("switch", "led")]},
        )  # fmt: skip
        for topic, config in configs.items():
            check_component(self, topic.split("/")[1], config, device_based=False)
            self.assertEqual(config["availability_topic"], TOPICS.availability)

    def test_outputs_without_control_are_read_only(self) -> None:
        """Without --mqtt-control an output is a binary_sensor of class power: nothing to switch."""
        led = ha.Discovery(TOPICS, sample_entities(control=False)).device_config()["cmps"]["led_state"]
        check_component(self, "binary_sensor", led, device_based=True)
        self.assertEqual((led["p"], led["device_class"]), ("binary_sensor", "power"))
        self.assertNotIn("command_topic", led)

    def test_bad_classes(self) -> None:
        """A class Home Assistant does not know, for a name the Pi lacks, or for an output, is refused."""
        with self.assertRaisesRegex(ValueError, "no device class 'dor'"):
            ha.entities(["door"], {}, [], {"door": "dor"}, False)
        with self.assertRaisesRegex(ValueError, "no input or sensor is named gate"):
            ha.entities(["door"], {}, [], {"gate": "door"}, False)
        with self.assertRaisesRegex(ValueError, "is an output"):
            ha.entities([], {}, ["led"], {"led": "light"}, True)

    def test_node_ids(self) -> None:
        """Discovery ids keep to [a-zA-Z0-9_-]."""
        self.assertEqual(node_id("pi.kitchen:3"), "rpisensor_pi_kitchen_3")


def payloads(steps):
    return [(topic, json.loads(payload) if payload else b"") for topic, payload in steps]


class DiscoveryPlanTests(SynchronousTestCase):
    def test_nothing_held(self) -> None:
        """A broker with none of the Pi's configs gets the current one, nothing else."""
        discovery = ha.Discovery(TOPICS, sample_entities())
        self.assertEqual(discovery.plan({}), (discovery.announcement(), []))

    def test_removed_input_device_based(self) -> None:
        """An input gone since the config was made: its component with p only, then the config without it."""
        before = ha.Discovery(TOPICS, sample_entities())
        after = ha.Discovery(TOPICS, [e for e in sample_entities() if e.name != "door"])
        steps, states = after.plan(dict(before.announcement()))
        (topic1, removal), (topic2, final) = payloads(steps)
        self.assertEqual(topic1, TOPICS.device_config)
        self.assertEqual(removal["cmps"]["door"], {"p": "binary_sensor"})
        self.assertEqual(set(final["cmps"]), {"button", "room", "hum", "led"})
        self.assertEqual(states, ["rpisensor/pi-kitchen-3f2a9c/door/state"])

    def test_removed_input_per_entity(self) -> None:
        """Per entity: the gone entity's config is emptied (retained), which removes it."""
        before = ha.Discovery(TOPICS, sample_entities(), "entity")
        after = ha.Discovery(TOPICS, [e for e in sample_entities() if e.name != "door"], "entity")
        steps, states = after.plan(dict(before.announcement()))
        door = "homeassistant/binary_sensor/rpisensor_pi-kitchen-3f2a9c/door/config"
        self.assertEqual(steps[-1], (door, b""))
        self.assertNotIn(door, [topic for topic, _ in steps[:-1]])
        self.assertEqual(states, ["rpisensor/pi-kitchen-3f2a9c/door/state"])

    def test_migration_to_device_based(self) -> None:
        """From per-entity configs: migrate_discovery on each, the device config, then each emptied."""
        before = ha.Discovery(TOPICS, sample_entities(), "entity")
        after = ha.Discovery(TOPICS, sample_entities(), "device")
        steps = payloads(after.plan(dict(before.announcement()))[0])
        old = set(before.entity_configs())
        self.assertEqual({t for t, p in steps[:5]}, old)
        self.assertTrue(all(p == {"migrate_discovery": True} for _, p in steps[:5]))
        self.assertEqual(steps[5][0], TOPICS.device_config)
        self.assertEqual({t for t, p in steps[6:]}, old)
        self.assertTrue(all(p == b"" for _, p in steps[6:]))

    def test_migration_to_per_entity(self) -> None:
        """From the device config: migrate it, publish the entities', then empty it."""
        before = ha.Discovery(TOPICS, sample_entities(), "device")
        after = ha.Discovery(TOPICS, sample_entities(), "entity")
        steps = payloads(after.plan(dict(before.announcement()))[0])
        self.assertEqual(steps[0], (TOPICS.device_config, {"migrate_discovery": True}))
        self.assertEqual(steps[-1], (TOPICS.device_config, b""))
        self.assertEqual(len(steps), 7)

    def test_control_switched_on(self) -> None:
        """--mqtt-control added: the read-only output goes, the switch comes (distinct unique ids)."""
        before = ha.Discovery(TOPICS, sample_entities(control=False))
        after = ha.Discovery(TOPICS, sample_entities(control=True))
        steps, states = after.plan(dict(before.announcement()))
        removal = json.loads(steps[0][1])["cmps"]
        self.assertEqual(removal["led_state"], {"p": "binary_sensor"})
        self.assertEqual(states, [])  # the led's state topic stays: the switch uses it

    def test_garbage_held(self) -> None:
        """A retained config that is not JSON, or not ours, does not stop the announcement."""
        discovery = ha.Discovery(TOPICS, sample_entities())
        steps, _ = discovery.plan({TOPICS.device_config: b"\xff{not json"})
        self.assertEqual(steps, discovery.announcement())

    def test_none(self) -> None:
        discovery = ha.Discovery(TOPICS, sample_entities(), "none")
        self.assertEqual(discovery.announcement(), [])
        self.assertEqual(discovery.plan({TOPICS.device_config: b"{}"}), ([], []))


class MessageTests(SynchronousTestCase):
    def test_reading(self) -> None:
        reading = Reading(stream="8f3a1c2e9b7d4a60", seq=406, ts="2026-12-01T19:33:25.123Z", synced=True,
                          sensor="room", value=22.562, text="22.56 °C", unit="°C", device="pi")  # fmt: skip
        body = json.loads(stream_message("pi", reading))
        self.assertEqual(body, {"kind": "reading", "device": "pi", "stream": "8f3a1c2e9b7d4a60", "seq": 406,
                                "ts": "2026-12-01T19:33:25.123Z", "synced": True, "sensor": "room",
                                "value": 22.562, "unit": "°C", "text": "22.56 °C"})  # fmt: skip
        self.assertEqual(parse_stream_message(stream_message("pi", reading)), ("pi", reading))
        chained = json.loads(stream_message("pi", replace(reading, digest="ab12")))
        self.assertEqual(chained["digest"], "ab12")

    def test_gap(self) -> None:
        gap = Gap(stream="8f3a1c2e9b7d4a60", first=407, last=900, reason="outbox full", device="pi")
        self.assertEqual(json.loads(stream_message("pi", gap))["from"], 407)
        self.assertEqual(parse_stream_message(stream_message("pi", gap)), ("pi", gap))

    def test_bad_messages(self) -> None:
        """Each malformed message is one MessageError naming what is wrong."""
        good = json.loads(stream_message("pi", Reading(stream="s", seq=1, ts="t", synced=True, sensor="b", value=1,
                                                      text="x")))  # fmt: skip
        for change, error in [({"seq": 0}, "'seq' must be a whole number"), ({"value": "1"}, "'value' must be"),
                              ({"kind": "x"}, "'kind' must be"), ({"synced": 1}, "'synced' must be"),
                              ({"device": None}, "'device' must be text")]:  # fmt: skip
            with self.assertRaisesRegex(MessageError, error):
                parse_stream_message(json.dumps({**good, **change}).encode())
        with self.assertRaisesRegex(MessageError, "'stream' is missing"):
            parse_stream_message(json.dumps({k: v for k, v in good.items() if k != "stream"}).encode())
        with self.assertRaisesRegex(MessageError, "not JSON"):
            parse_stream_message(b"\xff")

    @given(st.binary(max_size=300))
    def test_fuzz(self, payload: bytes) -> None:
        """Any bytes: a stream message or a MessageError, nothing else."""
        try:
            parse_stream_message(payload)
        except MessageError:
            pass

    @given(st.integers(1, 2**40), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
    def test_round_trip(self, seq: int, value: float, text: str) -> None:
        reading = Reading(stream="s", seq=seq, ts="2026-01-01T00:00:00.000Z", synced=False, sensor="x",
                          value=value, text=text, unit="hPa", device="d")  # fmt: skip
        self.assertEqual(parse_stream_message(stream_message("d", reading)), ("d", reading))

    def test_commands(self) -> None:
        self.assertEqual([command_level(p) for p in (b"ON", b" off\n", b"1", b"")], [True, False, None, None])

    def test_packet_size(self) -> None:
        """As the broker counts it: fixed header, topic, packet id, properties length, payload."""
        self.assertEqual(packet_size("a/b", b"x" * 10), 1 + 1 + 2 + 3 + 2 + 1 + 10)
        self.assertEqual(packet_size("t", b"x" * 200), 1 + 2 + 2 + 1 + 2 + 1 + 200)


class TopicTests(SynchronousTestCase):
    def test_commanded(self) -> None:
        self.assertEqual(TOPICS.commanded("rpisensor/pi-kitchen-3f2a9c/led/set"), "led")
        for topic in ("rpisensor/pi-kitchen-3f2a9c/led/state", "rpisensor/other/led/set",
                      "rpisensor/pi-kitchen-3f2a9c/a/b/set", "rpisensor/pi-kitchen-3f2a9c//set"):  # fmt: skip
            self.assertIsNone(TOPICS.commanded(topic), topic)


class SettingsTests(SynchronousTestCase):
    def test_urls(self) -> None:
        self.assertEqual(parse_url("mqtt://broker.lan"), (False, "broker.lan", 1883))
        self.assertEqual(parse_url("mqtts://broker.lan"), (True, "broker.lan", 8883))
        self.assertEqual(parse_url("MQTT://[::1]:1884"), (False, "::1", 1884))
        for url, error in [("http://x", "scheme"), ("mqtt://u:p@x", "no user name or password"),
                           ("mqtt://", "names no broker"), ("mqtt://x:99999", "not a broker URL"),
                           ("mqtt://x/a", "no path")]:  # fmt: skip
            with self.assertRaisesRegex(SettingsError, error):
                parse_url(url)

    def test_credentials(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("pi\ns3cret word\n")
        import os

        os.chmod(path, 0o644)
        user, password, warning = read_credentials(path)
        self.assertEqual((user, password), ("pi", "s3cret word"))
        self.assertIn("chmod 600", warning)
        os.chmod(path, 0o600)
        self.assertIsNone(read_credentials(path)[2])
        with open(path, "w") as f:
            f.write("\n")
        with self.assertRaisesRegex(SettingsError, "no user name"):
            read_credentials(path)
        with self.assertRaisesRegex(SettingsError, "cannot read"):
            read_credentials(path + ".missing")


class OptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> ReportOptions:
        options = ReportOptions()
        options.parseOptions(["--gpio", "sim", *args])
        return options

    def refused(self, message: str, *args: str) -> None:
        with self.assertRaisesRegex(usage.UsageError, message):
            self.parse(*args)

    def test_mqtt_instead_of_connect(self) -> None:
        options = self.parse("--mqtt", "mqtt://127.0.0.1", "--output", "led=12", "--mqtt-control")
        self.assertEqual(options["connect"], ())
        self.assertEqual(options["mqtt-broker"].url, "mqtt://127.0.0.1:1883")
        settings = options.mqtt_settings("pi", 100)
        self.assertEqual((settings.prefix, settings.discovery, settings.control, settings.keepalive),
                         ("rpisensor", "device", True, 15))  # fmt: skip

    def test_usage_errors(self) -> None:
        self.refused("--connect is required", "--interval", "1")
        self.refused("not both", "--mqtt", "mqtt://x", "--connect", "x:1")
        self.refused("--mqtt-ca needs an mqtts://", "--mqtt", "mqtt://x", "--mqtt-ca", __file__)
        self.refused("--mqtt-ca .*cannot read", "--mqtt", "mqtts://x", "--mqtt-ca", "/nonexistent.pem")
        self.refused("no user name or password in the URL", "--mqtt", "mqtt://pi:secret@x")
        self.refused("--mqtt-control needs --mqtt", "--connect", "x:1", "--mqtt-control")
        self.refused("--output needs --mqtt", "--connect", "x:1", "--output", "led=12")
        self.refused("--mqtt-prefix .* wildcards", "--mqtt", "mqtt://x", "--mqtt-prefix", "a/+")
        self.refused("--mqtt-discovery must be", "--mqtt", "mqtt://x", "--mqtt-discovery", "all")
        self.refused("--ha-class: button: Home Assistant has no device class", "--mqtt", "mqtt://x",
                     "--ha-class", "button=doorbell")  # fmt: skip
        self.refused("--ha-class: expected NAME=CLASS", "--mqtt", "mqtt://x", "--ha-class", "door")
        self.refused("--mqtt-key needs --mqtt-cert", "--mqtt", "mqtts://x", "--mqtt-key", __file__)

    def test_paho_not_imported(self) -> None:
        """Parsing the options (and --help) never imports paho."""
        import subprocess
        import sys

        code = ("import sys; from rpisensor.roles.report.options import ReportOptions; "
                "o = ReportOptions(); o.parseOptions(['--gpio', 'sim', '--mqtt', 'mqtt://x']); "
                "print('paho' in ''.join(sys.modules))")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        self.assertEqual(out.strip(), "False")


# -- the publishers, on an in-memory outbox ------------------------------------------------


class FakeConnection:
    """Publishes into a list; mids count from 1."""

    state = "connected"

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, bytes, bool]] = []
        self.open = True

    def publish(self, topic, payload, retain=False, qos=1):
        if not self.open:
            return None
        mid = len(self.sent) + 1
        self.sent.append((mid, topic, payload, retain))
        return mid


class Outbox:
    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.clock = Clock()
        self.service = JournalService(self.clock, Journal(None, max_entries=max_entries), outbox=True,
                                      runner=inline_runner)  # fmt: skip
        self.service.startService()

    def add(self, count: int, sensor: str = "button") -> None:
        for i in range(count):
            self.service.append(Reading(ts="2026-01-01T00:00:00.000Z", synced=True, sensor=sensor, value=i % 2,
                                        text=f"r{i}"))  # fmt: skip
        self.clock.advance(0)

    def stop(self) -> None:
        self.service.stopService()


class StreamPublisherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.outbox = Outbox()
        self.addCleanup(self.outbox.stop)
        self.refusals: list[str] = []
        self.publisher = StreamPublisher(self.outbox.service, "pi", "rpisensor/pi/stream",
                                         on_refused=self.refusals.append)  # fmt: skip
        self.connection = FakeConnection()

    def seqs(self, sent=None):
        return [parse_stream_message(payload)[1].seq for _, _, payload, _ in (sent or self.connection.sent)]

    def test_window_and_contiguous_delivery(self) -> None:
        """At most window unacknowledged; the outbox lets go only through the first unacknowledged."""
        self.outbox.add(10)
        self.publisher.attach(self.connection, 4, None)
        self.assertEqual(self.seqs(), [1, 2, 3, 4])
        self.publisher.acknowledged(2, None)  # out of order: nothing delivered yet
        self.assertEqual((self.publisher.delivered, self.outbox.service.acked), (0, 0))
        self.assertEqual(self.seqs(), [1, 2, 3, 4, 5])
        self.publisher.acknowledged(1, None)
        self.assertEqual((self.publisher.delivered, self.outbox.service.acked), (2, 2))
        self.assertEqual(self.seqs()[-1], 6)
        self.assertFalse(self.publisher.acknowledged(99, None), "not a stream mid")

    def test_live_entries_published_as_committed(self) -> None:
        self.publisher.attach(self.connection, 100, None)
        self.outbox.add(3)
        self.assertEqual(self.seqs(), [1, 2, 3])

    def test_catch_up_beyond_one_fetch(self) -> None:
        """A backlog larger than a fetch goes out whole, in order, each once per connection."""
        count = FETCH * 2 + 7
        self.outbox.add(count)
        self.publisher.attach(self.connection, 16, None)
        acked = 0
        while acked < len(self.connection.sent):
            acked += 1
            self.publisher.acknowledged(acked, None)
        self.assertEqual(self.seqs(), list(range(1, count + 1)))
        self.assertEqual(self.outbox.service.acked, count)

    def test_reconnect_publishes_the_unacknowledged_again(self) -> None:
        self.outbox.add(5)
        self.publisher.attach(self.connection, 5, None)
        self.publisher.acknowledged(1, None)
        self.publisher.acknowledged(3, None)
        self.publisher.detach()
        again = FakeConnection()
        self.publisher.attach(again, 5, None)
        self.assertEqual(self.seqs(again.sent), [2, 3, 4, 5])

    def test_refused(self) -> None:
        """A PUBACK with an error: not delivered, and the link is told to end."""
        self.outbox.add(2)
        self.publisher.attach(self.connection, 5, None)
        with capturedLogs() as logs:
            self.publisher.acknowledged(1, "Not authorized")
        self.assertEqual(self.refusals, ["Not authorized"])
        self.assertEqual(self.publisher.delivered, 0)
        self.assertIn("Not authorized", logs[0]["log_format"].format(**logs[0]))

    def test_too_large_for_the_broker(self) -> None:
        self.outbox.add(2)
        with capturedLogs() as logs:
            self.publisher.attach(self.connection, 5, 50)
        self.assertEqual(self.connection.sent, [])
        self.assertEqual(len(logs), 1)
        self.assertIn("maximum packet size", logs[0]["log_format"])

    def test_outbox_full_gap(self) -> None:
        """Entries the outbox dropped while away come as one gap message, then the rest."""
        self.outbox = Outbox(max_entries=10)
        publisher = StreamPublisher(self.outbox.service, "pi", "t")
        self.outbox.add(25)
        publisher.attach(self.connection, 100, None)
        first = parse_stream_message(self.connection.sent[0][2])[1]
        self.assertIsInstance(first, Gap)
        self.assertEqual(first.reason, "outbox full")
        self.assertEqual(first.first, 1)
        rest = [parse_stream_message(p)[1].seq for _, _, p, _ in self.connection.sent[1:]]
        self.assertEqual(rest, list(range(first.last + 1, 26)))
        publisher.stop()


class OutgoingTests(SynchronousTestCase):
    def test_coalescing_and_slots(self) -> None:
        """One slot: what waits for the same topic is replaced; ordered steps all go, in order."""
        outgoing = Outgoing(RateLimitedLog(Clock(), __import__("twisted.logger").logger.Logger()))
        connection = FakeConnection()
        outgoing.attach(connection, 1, None)
        outgoing.put("a", b"1")
        outgoing.put("b", b"1")
        outgoing.put("b", b"2")
        outgoing.put("c", b"x", coalesce=False)
        outgoing.put("c", b"y", coalesce=False)
        idle = outgoing.when_idle()
        for mid in range(1, 5):
            self.assertFalse(idle.called)
            outgoing.acknowledged(mid, None)
        self.assertEqual([(t, p) for _, t, p, _ in connection.sent], [("a", b"1"), ("b", b"2"), ("c", b"x"), ("c", b"y")])
        self.assertTrue(all(retain for *_, retain in connection.sent))
        self.assertTrue(idle.called)


class StatePublisherTests(SynchronousTestCase):
    def test_states(self) -> None:
        """ON/OFF for inputs and outputs, the number for sensors, only on change, all again at connect."""
        outbox = Outbox()
        outgoing = Outgoing(RateLimitedLog(Clock(), __import__("twisted.logger").logger.Logger()))
        connection = FakeConnection()
        outgoing.attach(connection, 100, None)
        states = StatePublisher(outbox.service, outgoing, TOPICS.state,
                                {"button": "input", "room": "sensor", "led": "output"})  # fmt: skip
        states.attach()
        for sensor, value in [("button", 1), ("button", 1), ("room", 22.5), ("led", 0), ("gone", 1), ("button", 0)]:
            outbox.service.append(Reading(ts="t", synced=True, sensor=sensor, value=value, text="x"))
        outbox.clock.advance(0)
        sent = [(t.split("/")[2], p) for _, t, p, _ in connection.sent]
        self.assertEqual(sent, [("button", b"ON"), ("room", b"22.5"), ("led", b"OFF"), ("button", b"OFF")])
        states.detach()
        again = FakeConnection()
        outgoing.attach(again, 100, None)
        states.attach()
        self.assertEqual(sorted((t.split("/")[2], p) for _, t, p, _ in again.sent),
                         [("button", b"OFF"), ("led", b"OFF"), ("room", b"22.5")])  # fmt: skip
        outbox.stop()


class ControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = SimulatedGPIO(clock=self.clock)
        self.controller = OutputController(
            self.backend, [OutputSpec("led", 12), OutputSpec("motor", 16, ttl=30)], inline_runner, self.clock
        )
        self.controller.setup()
        self.control = MQTTControl(self.controller, self.clock, rate=2)

    def level(self, pin: int) -> bool:
        return self.backend.level(pin)

    def test_commands_and_deadman(self) -> None:
        """ON drives, the link's end makes its deadmen safe at once; latches keep their level."""
        self.control.connected("mqtt://b:1883")
        with capturedLogs() as logs:
            self.control.command("led", b"ON")
            self.control.command("motor", b"ON")
        self.assertTrue(self.level(12) and self.level(16))
        lines = [event["log_format"].format(**event) for event in logs]
        self.assertIn("Control command from MQTT (mqtt://b:1883): set motor on", lines)
        self.control.lost()
        self.assertFalse(self.level(16), "the deadman goes safe when the link ends")
        self.assertTrue(self.level(12), "a latch keeps its level")
        self.control.command("led", b"OFF")  # no link: nothing
        self.assertTrue(self.level(12))

    def test_rate_limit_and_bad_input(self) -> None:
        self.control.connected("b")
        with capturedLogs() as logs:
            self.control.command("led", b"maybe")
            self.control.command("nosuch", b"ON")
            self.control.command("led", b"ON")
        lines = " ".join(event["log_format"].format(**event) for event in logs)
        self.assertIn("the payload must be ON or OFF, got b'maybe'", lines)
        self.assertIn("Too many control commands", lines)
        self.assertFalse(self.level(12), "the third command in the second was refused")
        self.clock.advance(1)
        with capturedLogs() as logs:
            self.control.command("nosuch", b"ON")
        self.assertIn("for 'nosuch': no such output; outputs are: led, motor", logs[-1]["log_format"].format(**logs[-1]))
        with capturedLogs() as logs:
            self.clock.advance(1)
            self.control.command("x" * 100_000, b"ON")
        self.assertLess(len(logs[-1]["log_format"].format(**logs[-1])), 300, "a long name is cut short in the log")

    def test_claims(self) -> None:
        """A client that holds the claim keeps MQTT out, as any other client."""
        other = object()
        self.controller.claim(other)
        self.control.connected("b")
        with capturedLogs() as logs:
            self.control.command("led", b"ON")
        self.assertFalse(self.level(12))
        self.assertIn("claimed", logs[-1]["log_format"].format(**logs[-1]))
