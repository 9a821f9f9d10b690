"""
Fleets on MQTT, on Twisted's doubles (no broker, no database): a collector's acks (the
message, fuzzed; merged, split, windowed), the Pi's end-to-end mode (let go only on a
collector's ack, in any order; published again when none comes, waiting longer each time; a
forged ack for what it never published changes nothing), C{collect --mqtt}'s ingest (a batch
per turn, acked to the Pi and to the broker only once stored, bad messages dropped), the
bridge of C{--publish-mqtt} (batches handed on in order once the broker has them), and
C{collect}'s options.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.entries import Gap, Reading
from rpisensor.lograte import RateLimitedLog
from rpisensor.mqtt.acks import Acks, merged
from rpisensor.mqtt.bridge import Bridge, NotPublished
from rpisensor.mqtt.client import BrokerLimits
from rpisensor.mqtt.ingest import IngestSettings, StreamIngest
from rpisensor.mqtt.messages import (
    MAX_ACK_SPANS, MessageError, ack_message, parse_ack_message, parse_stream_message, stream_message,
)  # fmt: skip
from rpisensor.mqtt.publisher import MAX_BACKOFF, EndToEnd, StreamPublisher
from rpisensor.mqtt.settings import Broker
from rpisensor.mqtt.topics import Topics, shared_streams, stream_device
from rpisensor.roles.collect.options import CollectOptions
from rpisensor.store import StoreClosed
from tests.test_mqtt import FakeConnection, Outbox

BROKER = Broker("127.0.0.1", 1883)


class AckMessageTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        payload = ack_message("8f3a1c2e9b7d4a60", [(406, 452), (454, 454)])
        self.assertEqual(json.loads(payload), {"stream": "8f3a1c2e9b7d4a60", "seqs": [[406, 452], [454, 454]]})
        self.assertEqual(parse_ack_message(payload), ("8f3a1c2e9b7d4a60", [(406, 452), (454, 454)]))

    def test_bad_acks(self) -> None:
        for payload, error in [
            (b"[]", "not a JSON object"), (b'{"seqs": []}', "'stream' is missing"),
            (b'{"stream": "s"}', "'seqs' is missing"), (b'{"stream": "s", "seqs": [[2, 1]]}', "before its first"),
            (b'{"stream": "s", "seqs": [[0, 1]]}', "whole number from 1"),
            (b'{"stream": "s", "seqs": [[true, 1]]}', "whole number from 1"),
            (b'{"stream": "s", "seqs": [1]}', r"\[first, last\] pair"), (b"[" * 100_000, "not JSON"),
            (json.dumps({"stream": "s", "seqs": [[1, 1]] * (MAX_ACK_SPANS + 1)}).encode(), "at most"),
        ]:  # fmt: skip
            with self.assertRaisesRegex(MessageError, error):
                parse_ack_message(payload)

    @given(st.binary(max_size=300))
    def test_fuzz(self, payload: bytes) -> None:
        """Any bytes: an ack or a MessageError, nothing else."""
        try:
            parse_ack_message(payload)
        except MessageError:
            pass

    def test_deeply_nested_stream_message(self) -> None:
        """A stream message nested beyond Python's recursion limit is a MessageError, not a crash."""
        with self.assertRaisesRegex(MessageError, "not JSON"):
            parse_stream_message(b"[" * 100_000)

    def test_topics(self) -> None:
        self.assertEqual(Topics("rpisensor", "pi-a").ack, "rpisensor/pi-a/ack")
        self.assertEqual(shared_streams("home/pis", "farm"), "$share/farm/home/pis/+/stream")
        self.assertEqual(stream_device("home/pis", "home/pis/pi-a/stream"), "pi-a")
        for topic in ("home/pis/a/b/stream", "home/pis//stream", "other/pi-a/stream", "home/pis/pi-a/state"):
            self.assertIsNone(stream_device("home/pis", topic), topic)


# -- the Pi: let go only on a collector's ack --------------------------------------------------


class EndToEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.outbox = Outbox()
        self.addCleanup(self.outbox.stop)
        self.clock = Clock()
        self.publisher = StreamPublisher(
            self.outbox.service, "pi", "rpisensor/pi/stream", end_to_end=EndToEnd(self.clock, timeout=10.0, window=6)
        )
        self.addCleanup(self.publisher.stop)
        self.connection = FakeConnection()
        self.stream = self.outbox.service.journal.stream

    def seqs(self, sent=None) -> list[int]:
        return [parse_stream_message(payload)[1].seq for _, _, payload, _ in (sent or self.connection.sent)]

    def puback(self, *mids: int) -> None:
        for mid in mids:
            self.publisher.acknowledged(mid, None)

    def test_only_a_collector_lets_go(self) -> None:
        """The broker's PUBACK frees a slot, never the outbox; acks in any order let go of what has no hole before it."""
        self.outbox.add(10)
        self.publisher.attach(self.connection, 3, None)
        self.assertEqual(self.seqs(), [1, 2, 3])
        self.puback(1, 2, 3)
        self.assertEqual(self.seqs(), [1, 2, 3, 4, 5, 6])  # slots free, but at most 6 unconfirmed
        self.puback(4, 5, 6)
        self.assertEqual(len(self.connection.sent), 6)
        self.assertEqual(self.outbox.service.acked, 0)
        self.assertEqual(self.publisher.confirm(self.stream, [(2, 2), (4, 5)]), 3)  # two collectors, each its share
        self.assertEqual(self.outbox.service.acked, 0)
        self.assertEqual(self.seqs()[6:], [7, 8, 9])
        self.publisher.confirm(self.stream, [(1, 1)])
        self.assertEqual(self.outbox.service.acked, 2)
        self.publisher.confirm(self.stream, [(3, 3), (6, 6)])
        self.assertEqual((self.publisher.delivered, self.outbox.service.acked), (6, 6))

    def test_acks_that_change_nothing(self) -> None:
        """Another stream's ack, a repeated one, one for entries never published: nothing is let go."""
        self.outbox.add(10)
        self.publisher.attach(self.connection, 3, None)
        self.assertEqual(self.publisher.confirm("another", [(1, 3)]), 0)
        self.assertEqual(self.publisher.confirm(self.stream, [(4, 10)]), 0)  # never published
        self.assertEqual(self.publisher.confirm(self.stream, [(1, 1)]), 1)
        self.assertEqual(self.publisher.confirm(self.stream, [(1, 1)]), 0)
        self.assertEqual(self.outbox.service.acked, 1)
        self.puback(1, 2, 3, 4, 5, 6)
        self.assertEqual(self.seqs(), [1, 2, 3, 4, 5, 6, 7])  # 2-7 unconfirmed: the window

    def test_published_again_when_no_ack_comes(self) -> None:
        """An entry the broker took but no collector acked goes again after the timeout, then after twice it, ..."""
        self.outbox.add(3)
        self.publisher.attach(self.connection, 10, None)
        self.puback(1, 2, 3)
        self.publisher.confirm(self.stream, [(2, 2)])
        with capturedLogs() as logs:
            self.clock.advance(9.0)
            self.assertEqual(len(self.connection.sent), 3)
            self.clock.advance(1.0)
        self.assertEqual(self.seqs()[3:], [1, 3])
        self.assertIn("publishing them again", logs[0]["log_format"])
        self.assertEqual(self.publisher.republished, 2)
        waits = []
        for _ in range(5):
            sent, waited = len(self.connection.sent), 0.0
            self.puback(*range(sent - 1, sent + 1))
            while len(self.connection.sent) == sent:
                self.clock.advance(1.0)
                waited += 1.0
            waits.append(waited)
        self.assertEqual(waits, [20.0, 40.0, 80.0, 80.0, 80.0])  # doubling, up to MAX_BACKOFF times
        self.assertEqual(MAX_BACKOFF, 8)
        self.publisher.confirm(self.stream, [(1, 3)])
        self.assertEqual(self.outbox.service.acked, 3)
        self.clock.advance(1000)
        self.assertEqual(self.publisher.unconfirmed, 0)

    def test_not_again_while_the_broker_has_not_acknowledged(self) -> None:
        """The timeout runs from the broker's PUBACK on: an entry waiting for its slot is not doubled."""
        self.outbox.add(1)
        self.publisher.attach(self.connection, 10, None)
        self.clock.advance(100)
        self.assertEqual(len(self.connection.sent), 1)

    def test_reconnect_publishes_the_unconfirmed_again(self) -> None:
        """After a reconnect: first every entry published and not confirmed, then on from where publishing was."""
        self.outbox.add(8)
        self.publisher.attach(self.connection, 4, None)
        self.puback(1, 2, 3, 4)
        self.publisher.confirm(self.stream, [(2, 3)])
        self.publisher.detach()
        again = FakeConnection()
        self.publisher.attach(again, 4, None)
        self.assertEqual(self.seqs(again.sent), [1, 4, 5, 6])  # (4 slots)
        for mid in (1, 2, 3, 4):
            self.publisher.acknowledged(mid, None)
        self.assertEqual(self.seqs(again.sent), [1, 4, 5, 6, 7, 8])
        self.assertEqual(self.publisher.unconfirmed, 6)

    def test_a_gap_is_confirmed_whole(self) -> None:
        self.outbox = Outbox(max_entries=5)
        publisher = StreamPublisher(self.outbox.service, "pi", "t", end_to_end=EndToEnd(self.clock, 10.0, 100))
        self.addCleanup(publisher.stop)
        self.outbox.add(12)
        publisher.attach(self.connection, 100, None)
        first = parse_stream_message(self.connection.sent[0][2])[1]
        self.assertIsInstance(first, Gap)
        publisher.confirm(self.outbox.service.journal.stream, [(first.first, first.last)])
        self.assertEqual(self.outbox.service.acked, first.last)


# -- the collector's acks ---------------------------------------------------------------------


class AckQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.acks = Acks("rpisensor", RateLimitedLog(Clock(), Logger()))
        self.connection = FakeConnection()

    def sent(self) -> list[tuple[str, tuple]]:
        return [(topic, parse_ack_message(payload)) for _, topic, payload, _ in self.connection.sent]

    def test_merged(self) -> None:
        self.assertEqual(merged([(5, 5), (1, 4), (7, 9), (8, 8), (3, 3)]), [(1, 5), (7, 9)])

    def test_merged_per_stream_while_waiting_for_a_slot(self) -> None:
        self.acks.attach(self.connection, 1)
        self.acks.put("pi-a", "s1", 1, 1)
        self.acks.pump()
        for seq in (3, 2, 5):
            self.acks.put("pi-a", "s1", seq, seq)
        self.acks.put("pi-b", "s2", 7, 9)
        self.acks.pump()
        self.assertEqual(len(self.connection.sent), 1)
        self.acks.acknowledged(1, None)
        self.acks.acknowledged(2, None)
        self.assertEqual(self.sent(), [("rpisensor/pi-a/ack", ("s1", [(1, 1)])),
                                       ("rpisensor/pi-a/ack", ("s1", [(2, 3), (5, 5)])),
                                       ("rpisensor/pi-b/ack", ("s2", [(7, 9)]))])  # fmt: skip

    def test_split_beyond_the_most_spans(self) -> None:
        self.acks.attach(self.connection, 5)
        for seq in range(1, 2 * (MAX_ACK_SPANS + 10), 2):
            self.acks.put("pi", "s", seq, seq)
        self.acks.pump()
        counts = [len(spans) for _, (_, spans) in self.sent()]
        self.assertEqual(counts, [MAX_ACK_SPANS, 10])

    def test_what_the_broker_did_not_acknowledge_goes_on_the_next_link(self) -> None:
        self.acks.attach(self.connection, 5)
        self.acks.put("pi", "s", 1, 4)
        self.acks.pump()
        self.acks.detach()
        again = FakeConnection()
        self.acks.attach(again, 5)
        self.assertEqual([parse_ack_message(p) for _, _, p, _ in again.sent], [("s", [(1, 4)])])


# -- collect --mqtt ---------------------------------------------------------------------------------


class BrokerDouble(FakeConnection):
    """A connection for the ingest and the bridge: publishes into a list, records its PUBACKs to the broker."""

    def __init__(self, handler, receive_maximum: int = 20) -> None:
        super().__init__()
        self.handler = handler
        self.state = "connecting"
        self.pubacks: list[int] = []
        self.subscriptions: list[list[str]] = []
        self.receive_maximum = receive_maximum
        self.aborted = False

    def connect(self) -> Deferred:
        self.state = "connected"
        return succeed(BrokerLimits(self.receive_maximum))

    def subscribe(self, topics):
        self.subscriptions.append(topics)
        return len(self.subscriptions)

    def ack(self, mid: int) -> None:
        self.pubacks.append(mid)

    def abort(self) -> None:
        self.aborted = True
        self.state = "closed"

    def disconnect(self) -> None:
        self.state = "closed"
        self.handler.lost("disconnected")


def reading_message(device: str, seq: int, stream: str = "s1") -> bytes:
    return stream_message(device, Reading(stream=stream, seq=seq, ts="2026-12-01T19:33:25.123Z", synced=True,
                                          sensor="button", value=seq % 2, text="x"))  # fmt: skip


class IngestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.batches: list[list] = []
        self.results: list[Deferred] = []
        self.connections: list[BrokerDouble] = []
        self.ingest = StreamIngest(self.clock, IngestSettings(BROKER, group="farm", client_id="c1"), self.deliver,
                                   lambda: "2026-12-01T19:33:26.000Z", connection_factory=self.connect)  # fmt: skip
        self.ingest.startService()
        self.link = self.connections[-1]

    def connect(self, handler) -> BrokerDouble:
        connection = BrokerDouble(handler)
        handler.connection = connection
        self.connections.append(connection)
        return connection

    def deliver(self, entries: list) -> Deferred:
        self.batches.append(entries)
        d: Deferred = Deferred()
        self.results.append(d)
        return d

    def send(self, topic: str, payload: bytes, mid: int) -> None:
        self.link.handler.message(topic, payload, False, mid)

    def acks(self) -> list[tuple[str, tuple]]:
        return [(topic, parse_ack_message(payload)) for _, topic, payload, _ in self.link.sent]

    def test_subscribes_through_the_shared_subscription(self) -> None:
        self.assertEqual(self.link.subscriptions, [["$share/farm/rpisensor/+/stream"]])

    def test_stored_then_acked_to_the_pi_then_to_the_broker(self) -> None:
        """One batch per turn; nothing acknowledged to anyone before the store fires."""
        self.send("rpisensor/pi-a/stream", reading_message("pi-a", 3), 11)
        self.send("rpisensor/pi-b/stream", reading_message("pi-b", 1, "s2"), 12)
        self.send("rpisensor/pi-a/stream", reading_message("pi-a", 1), 13)
        self.clock.advance(0)
        [batch] = self.batches
        self.assertEqual([(e.device, e.seq, e.peer) for e in batch],
                         [("pi-a", 3, "mqtt://127.0.0.1:1883"), ("pi-b", 1, "mqtt://127.0.0.1:1883"),
                          ("pi-a", 1, "mqtt://127.0.0.1:1883")])  # fmt: skip
        self.assertEqual((self.link.sent, self.link.pubacks), ([], []))
        self.results[0].callback(None)
        self.assertEqual(self.acks(), [("rpisensor/pi-a/ack", ("s1", [(1, 1), (3, 3)])),
                                       ("rpisensor/pi-b/ack", ("s2", [(1, 1)]))])  # fmt: skip
        self.assertEqual(self.link.pubacks, [11, 12, 13])
        self.assertEqual(self.ingest.stored, 3)

    def test_bad_messages_are_dropped(self) -> None:
        """Not a stream message, or naming another device than its topic: logged, acknowledged to the broker, not stored."""
        with capturedLogs() as logs:
            self.send("rpisensor/pi-a/stream", b"{nonsense", 1)
            self.send("rpisensor/pi-a/stream", reading_message("pi-b", 1), 2)
            self.clock.advance(0)
        self.assertEqual(self.batches, [])
        self.assertEqual(self.link.pubacks, [1, 2])
        self.assertEqual(self.ingest.dropped, 2)
        texts = [event["log_format"].format(**event) for event in logs]
        self.assertTrue(any("not JSON" in text for text in texts), texts)
        self.assertTrue(any("names device 'pi-b', but came on the topic of 'pi-a'" in text for text in texts), texts)

    def test_a_store_failure_is_not_acked_to_the_pi(self) -> None:
        self.send("rpisensor/pi-a/stream", reading_message("pi-a", 1), 5)
        self.clock.advance(0)
        with capturedLogs() as logs:
            self.results[0].errback(RuntimeError("disk on fire"))
        self.assertEqual((self.link.sent, self.link.pubacks), ([], [5]))
        self.assertIn("disk on fire", logs[0]["log_format"].format(**logs[0]))

    def test_stored_after_the_link_dropped(self) -> None:
        """Acks wait for the next link; PUBACKs of the old link's messages are not sent on the new one."""
        self.send("rpisensor/pi-a/stream", reading_message("pi-a", 1), 5)
        self.clock.advance(0)
        self.link.handler.lost("cut")
        self.clock.advance(5)
        new = self.connections[-1]
        self.assertIsNot(new, self.link)
        self.results[0].callback(None)
        self.assertEqual(new.pubacks, [])
        self.assertEqual([parse_ack_message(p) for _, _, p, _ in new.sent], [("s1", [(1, 1)])])

    def test_a_clean_stop_waits_for_the_store(self) -> None:
        self.send("rpisensor/pi-a/stream", reading_message("pi-a", 1), 5)
        stopped = self.ingest.stopService()
        self.assertEqual(len(self.batches), 1)  # handed over at once
        self.assertFalse(stopped.called)
        self.results[0].callback(None)
        self.assertTrue(stopped.called)
        self.assertEqual(self.link.pubacks, [5])
        self.assertEqual(len(self.link.sent), 1)

    def test_stopping_store_acks_nothing(self) -> None:
        self.send("rpisensor/pi-a/stream", reading_message("pi-a", 1), 5)
        self.clock.advance(0)
        self.results[0].errback(StoreClosed("stopping"))
        self.assertEqual((self.link.sent, self.link.pubacks), ([], []))

    def test_a_refused_subscription_ends_the_link(self) -> None:
        """The link is ended and counts as a failed attempt, although it had lived long enough to count as healthy."""
        self.clock.advance(self.ingest.schedule.healthy_after + 1)
        with capturedLogs() as logs:
            self.link.handler.subscribed(1, "Not authorized")
        self.assertTrue(self.link.aborted)
        self.assertIn("shared subscriptions", logs[0]["log_format"])
        self.link.handler.lost("aborted")
        self.assertEqual(self.ingest.schedule.failures, 1)

    def test_a_healthy_link_lost_is_no_failure(self) -> None:
        self.clock.advance(self.ingest.schedule.healthy_after + 1)
        self.link.handler.lost("cut")
        self.assertEqual(self.ingest.schedule.failures, 0)


# -- collect --publish-mqtt ---------------------------------------------------------------------


class BridgeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connections: list[BrokerDouble] = []
        self.bridge = Bridge(self.clock, BROKER, "rpisensor", "c1", connection_factory=self.connect)
        self.bridge.startService()
        self.link = self.connections[-1]

    def connect(self, handler) -> BrokerDouble:
        connection = BrokerDouble(handler, receive_maximum=3)
        handler.connection = connection
        self.connections.append(connection)
        return connection

    def entries(self, device: str, *seqs: int) -> list[Reading]:
        return [Reading(stream="s", seq=seq, ts="t", synced=True, sensor="b", value=1, text="x", device=device)
                for seq in seqs]  # fmt: skip

    def test_published_as_a_pi_would_then_handed_on_in_order(self) -> None:
        first = self.bridge.publish(self.entries("pi-a", 1, 2))
        second = self.bridge.publish(self.entries("pi-b", 7))
        third = self.bridge.publish(self.entries("pi-a", 3))
        self.assertEqual([topic for _, topic, _, _ in self.link.sent],
                         ["rpisensor/pi-a/stream", "rpisensor/pi-a/stream", "rpisensor/pi-b/stream"])  # 3 slots
        self.assertEqual(parse_stream_message(self.link.sent[2][2])[0], "pi-b")
        self.link.handler.published(3, None)  # the second batch's, first: it waits for the first
        self.assertFalse(second.called)
        self.link.handler.published(1, None)
        self.link.handler.published(2, None)
        self.assertTrue(first.called and second.called)
        self.assertFalse(third.called)
        self.link.handler.published(4, None)
        self.assertTrue(third.called)

    def test_a_refusal_fails_its_batch_and_those_after_it(self) -> None:
        first = self.bridge.publish(self.entries("pi-a", 1))
        second = self.bridge.publish(self.entries("pi-a", 2))
        third = self.bridge.publish(self.entries("pi-a", 3))
        errors = []
        for d in (second, third):
            d.addErrback(lambda f: errors.append(f.trap(NotPublished)))
        with capturedLogs():
            self.link.handler.published(2, "Not authorized")
        self.assertEqual(len(errors), 2)
        self.assertFalse(first.called)
        self.link.handler.published(1, None)
        self.assertTrue(first.called)

    def test_broker_away(self) -> None:
        """Not acknowledged meanwhile; sent again on the next link; a stop fails what waits."""
        done = self.bridge.publish(self.entries("pi-a", 1, 2))
        self.link.handler.lost("cut")
        self.clock.advance(5)
        new = self.connections[-1]
        self.assertEqual(len(new.sent), 2)
        later = self.bridge.publish(self.entries("pi-a", 3))
        self.assertFalse(done.called)
        stopped = []
        self.bridge.stopService().addCallback(stopped.append)
        self.assertTrue(stopped)
        for d in (done, later):
            self.assertIsInstance(self.failureResultOf(d).value, StoreClosed)
        self.assertIsInstance(self.failureResultOf(self.bridge.publish(self.entries("pi-a", 4))).value, StoreClosed)


class CollectOptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> CollectOptions:
        options = CollectOptions()
        options.parseOptions(list(args))
        return options

    def test_mqtt_alone_listens_nowhere(self) -> None:
        options = self.parse("--mqtt", "mqtt://broker.lan", "--store", "x.sqlite")
        self.assertEqual(options["listen"], [])
        self.assertEqual(options["mqtt-broker"].url, "mqtt://broker.lan:1883")
        self.assertEqual((options["mqtt-group"], options["mqtt-prefix"]), ("rpisensor", "rpisensor"))
        self.assertEqual(self.parse("--mqtt", "mqtt://b", "--listen", "tcp:1", "--store", "x.db")["listen"], ["tcp:1"])
        self.assertEqual(self.parse("--publish-mqtt", "mqtt://b")["listen"], ["tcp:22000"])

    def test_usage_errors(self) -> None:
        for message, args in [
            ("--mqtt needs an SQLite .* or PostgreSQL store", ("--mqtt", "mqtt://b", "--store", "x.jsonl")),
            ("--mqtt needs an SQLite .* or PostgreSQL store", ("--mqtt", "mqtt://b")),
            ("--mqtt-group needs --mqtt", ("--mqtt-group", "g")),
            ("--mqtt-group must be one topic level", ("--mqtt", "mqtt://b", "--mqtt-group", "a/b")),
            ("--mqtt-ca needs --mqtt URL", ("--mqtt-ca", __file__)),
            ("--publish-mqtt: .*scheme", ("--publish-mqtt", "http://b")),
            ("no user name or password in the URL", ("--mqtt", "mqtt://u:p@b")),
        ]:  # fmt: skip
            with self.assertRaisesRegex(usage.UsageError, message):
                self.parse(*args)

