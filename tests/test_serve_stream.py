"""
C{serve}'s publishing side on Twisted's doubles: the journal the sampler
records, C{hello}/C{welcome}, C{subscribe} (snapshot, resume, behind the
journal, ahead of it), the ack window, heartbeats both ways, a slow
subscriber paused then dropped, bad frames after subscribing, the v1
commands beside it, C{status}, and the seam for inputs whose backend reports
its changes (edge events). Everything on a L{Clock}, with the real journal in
a file and reads run inline (or when the test says).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.net.limits import ListenSettings
from rpisensor.roles.serve.commands import NO_JOURNAL
from rpisensor.roles.serve.publishing import JournalOpenError, PublishingService, PublishSettings
from rpisensor.roles.serve.service import SensorServerFactory
from rpisensor.roles.serve.subscription import ONLY_V2
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.reader import InputReader
from rpisensor.stream.journal import Journal
from rpisensor.stream.journal_service import JournalService
from rpisensor.stream.sender import TRIMMED as TRIMMED_REASON
from rpisensor.hw.interfaces import LevelChange
from rpisensor.stream.state import InputState
from rpisensor.testing import FakeRunner, inline_runner, simulated_pins
from rpisensor.wire import v2
from tests.support import DOOR

#: 2026-12-01T19:33:25.123Z
START = 1796153605.123
BUTTON_PIN, DOOR_PIN = DEFAULT_INPUT.pin, DOOR.pin


class _Synced:
    def synced(self) -> bool:
        return True


class EdgePins(SimulatedGPIO):
    """
    Simulated pins that tell their changes at once, in the caller's thread: the
    edge path on a Clock, without the pipe the reactor would watch.
    """

    def __init__(self, clock) -> None:
        super().__init__(clock=clock, edges=True)
        self._on_change = None

    def watch(self, reactor, on_change) -> None:
        self._on_change = on_change

    def unwatch(self) -> None:
        self._on_change = None

    def set_level(self, channel, high) -> None:
        changed = self.level(channel) != high
        super().set_level(channel, high)
        if self._on_change is not None and changed and channel in self.set_up_channels:
            self._on_change(LevelChange(self._now(), channel, high))


class Client:
    """One connection to the harness's server on a StringTransport."""

    def __init__(self, factory, peer: str, port: int) -> None:
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", peer, port))
        self.protocol.makeConnection(self.transport)

    def send(self, *messages: str | bytes) -> None:
        for message in messages:
            data = message if isinstance(message, bytes) else message.encode("utf-8")
            self.protocol.dataReceived(data + b"\0")

    def texts(self) -> list[str]:
        """The messages received since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return [body.decode("utf-8") for body in data.split(b"\0")[:-1]]

    def frames(self) -> list:
        """The messages received since the last call: v2 frames parsed, other text as it is."""
        return [v2.parse(text) if v2.is_v2(text) else text for text in self.texts()]

    def readings(self) -> list[tuple[int, str, int]]:
        """The readings received since the last call as (seq, sensor, value); fails on anything else."""
        frames = self.frames()
        for frame in frames:
            assert isinstance(frame, v2.Reading), frames
        return [(f.seq, f.sensor, f.value) for f in frames]

    def lose(self) -> None:
        self.protocol.connectionLost(None)

    @property
    def aborted(self) -> bool:
        return self.transport.disconnected


class Harness:
    """C{serve} with a journal in a file, a sampler at 0.1 s, reads inline (or by hand)."""

    def __init__(
        self,
        test: SynchronousTestCase,
        window: int = 1000,
        max_entries: int = 1_000_000,
        max_subscribers: int = 50,
        max_lag: float = 30.0,
        reads_by_hand: bool = False,
        edges: bool = False,
        path: str | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.backend = EdgePins(self.clock) if edges else SimulatedGPIO(clock=self.clock, edges=False)
        self.runner = FakeRunner() if reads_by_hand else inline_runner
        self.reader = InputReader(self.backend, [DEFAULT_INPUT, DOOR], self.runner, self.clock, wall=self.clock.seconds)
        self.reader.setup()
        self.path = path or os.path.join(test.mktemp() + ".sqlite")
        journal = Journal(self.path, max_entries=max_entries, current_boot="boot-1")
        self.journal = JournalService(self.clock, journal, outbox=False, runner=inline_runner)
        self.state = InputState.for_reader(self.reader, self.clock)
        settings = PublishSettings("pi-test", window, 0.1, max_subscribers, max_lag)
        self.publishing = PublishingService(
            self.clock, self.reader, self.journal, settings, self.state, clock_state=_Synced()
        )
        self.factory = SensorServerFactory(
            self.reader, ListenSettings(), publishing=self.publishing, state=self.state
        )
        if self.state is not None:
            self.state.startService()
        self.publishing.startService()
        self.settle()
        self._ports = iter(range(50000, 60000))
        test.addCleanup(self.stop)

    def stop(self) -> None:
        if self.publishing.running:
            if isinstance(self.runner, FakeRunner):
                self.settle()
            self.publishing.stopService()

    def settle(self) -> None:
        """Let what is due now happen: reads the test holds, commits, sends."""
        for _ in range(5):
            self.clock.advance(0)
            if isinstance(self.runner, FakeRunner):
                self.runner.run_all()

    def step(self, seconds: float = 0.1) -> None:
        """Let C{seconds} pass: the sampler reads the inputs at each 0.1 s."""
        self.clock.advance(seconds)
        self.settle()

    def press(self, pin: int = BUTTON_PIN) -> None:
        self.backend.set_level(pin, not DEFAULT_INPUT.active_low if pin == BUTTON_PIN else True)
        self.step()

    def release(self, pin: int = BUTTON_PIN) -> None:
        self.backend.set_level(pin, DEFAULT_INPUT.active_low if pin == BUTTON_PIN else False)
        self.step()

    def toggle(self, times: int) -> None:
        for _ in range(times):
            self.backend.set_level(BUTTON_PIN, not self.backend.level(BUTTON_PIN))
            self.step()

    def connect(self, peer: str = "192.168.1.20") -> Client:
        return Client(self.factory, peer, next(self._ports))

    def entries(self) -> list[tuple[int, str, int]]:
        """What the journal holds now, from its file: (seq, sensor, value) of each reading."""
        return [
            (e.seq, e.sensor, e.value)
            for e in self.journal.journal.after(0, 100_000)
            if isinstance(e, v2.Reading)
        ]

    @property
    def stream(self) -> str:
        return self.journal.journal.stream


def hello(heartbeat=None) -> str:
    body = {"v": 2, "role": "subscribe"}
    if heartbeat is not None:
        body["heartbeat"] = heartbeat
    return "hello " + json.dumps(body)


class JournalTests(SynchronousTestCase):
    def test_sampler_records_every_change(self) -> None:
        """At start each input's state, then each change, in order, with the Pi's time of the read."""
        harness = Harness(self)
        self.assertEqual(harness.entries(), [(1, "button", 0), (2, "door", 0)])
        harness.press()
        harness.step()  # no change: nothing recorded
        harness.press(DOOR_PIN)
        harness.release()
        self.assertEqual(harness.entries(), [
            (1, "button", 0), (2, "door", 0), (3, "button", 1), (4, "door", 1), (5, "button", 0),
        ])  # fmt: skip
        [third] = harness.journal.journal.after(2, 1)
        self.assertEqual(third.ts, v2.format_timestamp(START + 0.1))
        self.assertTrue(third.synced)

    def test_restart_goes_on(self) -> None:
        """
        Restarted on the same file: the same stream, the numbering goes on, an
        unchanged input (the door) is not recorded again, a changed one (the
        button, released while we were down: new pins) is.
        """
        harness = Harness(self)
        harness.press()
        stream = harness.stream
        harness.stop()
        again = Harness(self, path=harness.path)
        self.assertEqual(again.stream, stream)
        again.press(DOOR_PIN)
        self.assertEqual(again.entries(), [
            (1, "button", 0), (2, "door", 0), (3, "button", 1), (4, "button", 0), (5, "door", 1),
        ])  # fmt: skip

    def test_cannot_open(self) -> None:
        """A journal that cannot be used stops the start-up with one line naming it and what to do."""
        path = Path(self.mktemp()) / "no-such-directory" / "journal.sqlite"
        clock = Clock()
        reader = InputReader(simulated_pins(clock=clock), [DEFAULT_INPUT], inline_runner, clock, wall=clock.seconds)
        journal = JournalService(clock, Journal(path), outbox=False, runner=inline_runner)
        publishing = PublishingService(clock, reader, journal, PublishSettings("pi"))
        error = self.assertRaises(JournalOpenError, publishing.startService)
        self.assertIsInstance(error, SystemExit)
        self.assertIsInstance(error, Exception)
        [line] = str(error).splitlines()
        self.assertEqual(
            line,
            f"rpisensor: cannot use the journal {path}: its directory {path.absolute().parent} does not exist "
            f"(create it: mkdir -p {path.absolute().parent}) (choose another file with --journal FILE, or keep "
            "it in memory with --journal none)",
        )


class HelloTests(SynchronousTestCase):
    def test_welcome(self) -> None:
        """hello is answered with welcome: device, stream, what the journal holds, the heartbeat asked for."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(5))
        journal = harness.journal.journal
        self.assertEqual(client.texts(), [
            f'welcome {{"v":2,"device":"pi-test","stream":"{harness.stream}","first":1,"last":2,'
            f'"heartbeat":5,"owner":"{journal.secret}","incarnation":"{journal.incarnation}"}}'
        ])  # fmt: skip

    def test_default_heartbeat(self) -> None:
        """A hello without a heartbeat gets the default, 10 s."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello())
        [welcome] = client.frames()
        self.assertEqual(welcome.heartbeat, 10)

    def test_bad_hellos(self) -> None:
        """Each bad hello gets one error naming the problem; the connection stays usable for v1."""
        harness = Harness(self)
        client = harness.connect()
        client.send(
            "hello {not json",
            'hello {"v":1,"role":"subscribe"}',
            "hello",
            'hello {"v":2,"role":"subscribe","heartbeat":0}',
            "ping",
        )
        self.assertEqual(client.texts(), [
            "error: hello: the text after it is not JSON (Expecting property name enclosed in double quotes)",
            "error: hello: this peer speaks version 2, not 1",
            "error: hello needs a JSON object after it",
            "error: hello: 'heartbeat' must be a number of seconds from 0.1 to 3600",
            "pong",
        ])  # fmt: skip
        self.assertFalse(client.transport.disconnecting)

    def test_a_reporters_hello_is_refused(self) -> None:
        """
        A reporter pointed at serve (both default to port 22000) is refused with
        a refused frame saying where to go, and closed: it backs off instead of
        taking serve for a plain-text server and sending it text every 2 s.
        """
        harness = Harness(self)
        client = harness.connect()
        client.send('hello {"v":2,"role":"report","device":"pi","stream":"abc"}')
        [refused] = client.frames()
        self.assertIsInstance(refused, v2.Refused)
        self.assertIn("a reporter sends to a collector (twistd rpisensor collect)", refused.reason)
        self.assertTrue(client.transport.disconnecting)

    def test_second_hello(self) -> None:
        """A second hello is an error; the first still stands."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(), hello())
        self.assertEqual(client.texts()[1], "error: hello: already answered; send subscribe")

    def test_without_journal(self) -> None:
        """A server built without a journal answers hello, subscribe and status with one error: v1 goes on."""
        clock = Clock()
        reader = InputReader(simulated_pins(clock=clock), [DEFAULT_INPUT], inline_runner, clock, wall=clock.seconds)
        reader.setup()
        client = Client(SensorServerFactory(reader), "192.168.1.20", 40000)
        client.send(hello(), "subscribe", "status", "go")
        clock.advance(0)
        self.assertEqual(client.texts(), [NO_JOURNAL, NO_JOURNAL, NO_JOURNAL, "Button released"])

    def test_v1_commands_after_hello(self) -> None:
        """After hello and before subscribe, v1 commands are answered as ever (a client falling back)."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(), "go", "read door")
        self.assertEqual(client.texts()[1:], ["Button released", "closed"])


class SubscribeTests(SynchronousTestCase):
    def test_fresh_snapshot_then_live(self) -> None:
        """subscribe {}: each input's latest reading, marked snapshot, then each change as it happens."""
        harness = Harness(self)
        harness.press()
        client = harness.connect()
        client.send(hello(), "subscribe {}")
        frames = client.frames()[1:]
        self.assertEqual([(f.seq, f.sensor, f.value, f.snapshot) for f in frames],
                         [(2, "door", 0, True), (3, "button", 1, True)])  # fmt: skip
        harness.release()
        harness.press(DOOR_PIN)
        frames = client.frames()
        self.assertEqual([(f.seq, f.sensor, f.value, f.snapshot) for f in frames],
                         [(4, "button", 0, False), (5, "door", 1, False)])  # fmt: skip
        self.assertEqual({f.stream for f in frames}, {harness.stream})
        self.assertEqual(frames[0].text, "Button released")

    def test_bare_subscribe_without_hello(self) -> None:
        """A person with nc may type just 'subscribe' (any case, CR/LF): the defaults apply."""
        harness = Harness(self)
        client = harness.connect()
        client.send(" SUBSCRIBE\r\n")
        self.assertEqual([(f.seq, f.snapshot) for f in client.frames()], [(1, True), (2, True)])
        harness.press()
        self.assertEqual(client.readings(), [(3, "button", 1)])

    def test_resume_replay_then_live(self) -> None:
        """The replay is the journal's entries after N, in order; then a live one."""
        harness = Harness(self)
        harness.toggle(4)
        client = harness.connect()
        client.send('subscribe {"after":1}')
        self.assertEqual(client.readings(), [e for e in harness.entries() if e[0] > 1])
        harness.press(DOOR_PIN)
        self.assertEqual(client.readings(), [(7, "door", 1)])

    def test_resume_behind_the_journal(self) -> None:
        """A resume from before what the journal keeps gets a gap first, saying why, then what is kept."""
        harness = Harness(self, max_entries=3)
        harness.toggle(6)  # entries 1..8; the journal keeps 6..8
        client = harness.connect()
        client.send(hello(), 'subscribe {"after":2}')
        frames = client.frames()[1:]
        self.assertEqual(frames[0], v2.Gap(stream=harness.stream, first=3, last=5, reason=TRIMMED_REASON))
        self.assertEqual([f.seq for f in frames[1:]], [6, 7, 8])

    def test_ahead_of_the_stream(self) -> None:
        """
        A subscriber holding more of the stream than the journal (the journal is
        an older copy): the server asks where the two still agree (probe), goes
        on as a new stream, and closes the connection saying so; the subscriber
        reconnects and finds the new stream.
        """
        harness = Harness(self)
        old = harness.stream
        client = harness.connect()
        client.send(hello(), 'subscribe {"after":99}')
        self.assertEqual(client.texts()[1:], ['probe {"seq":1}'])
        client.send('match {"seq":1}')  # it holds no entry 1 of this journal's
        [closing] = client.texts()
        self.assertTrue(closing.startswith(f"error: this Pi's stream {old} goes on as stream"), closing)
        self.assertTrue(client.transport.disconnecting)
        self.assertNotEqual(harness.journal.journal.stream, old)

    def test_bad_subscribe(self) -> None:
        """A malformed subscribe gets one error; the connection is not subscribed and stays usable."""
        harness = Harness(self)
        client = harness.connect()
        client.send('subscribe {"after":-1}', "subscribe [1]", "go")
        self.assertEqual(client.texts(), [
            f"error: subscribe: 'after' must be a whole number from 0 to {v2.MAX_SEQ}",
            "error: subscribe: expected a JSON object {...}, got list",
            "Button released",
        ])  # fmt: skip

    def test_earlier_replies_first(self) -> None:
        """A go sent just before subscribe is answered before the first streamed reading."""
        harness = Harness(self, reads_by_hand=True)
        client = harness.connect()
        client.send("go", "subscribe {}")
        self.assertEqual(client.texts(), [])  # the go's read is still running
        harness.settle()
        texts = client.texts()
        self.assertEqual(texts[0], "Button released")
        self.assertEqual([v2.parse(t).seq for t in texts[1:]], [1, 2])


class WindowTests(SynchronousTestCase):
    def test_ack_window(self) -> None:
        """No more than the window goes unacknowledged; each ack lets the next ones go."""
        harness = Harness(self, window=2)
        harness.toggle(4)  # entries 1..6
        client = harness.connect()
        client.send('subscribe {"after":0}')
        self.assertEqual([r[0] for r in client.readings()], [1, 2])
        harness.toggle(1)
        self.assertEqual(client.readings(), [])
        client.send('ack {"seq":1}')
        self.assertEqual([r[0] for r in client.readings()], [3])
        client.send('ack {"seq":3}')
        self.assertEqual([r[0] for r in client.readings()], [4, 5])
        client.send('ack {"seq":5}', 'ack {"seq":4}')  # an older ack is nothing new
        self.assertEqual([r[0] for r in client.readings()], [6, 7])

    def test_ack_beyond_what_was_sent(self) -> None:
        """An ack of a reading never sent gets an error; the stream goes on."""
        harness = Harness(self, window=2)
        client = harness.connect()
        client.send('subscribe {"after":0}')
        client.readings()
        client.send('ack {"seq":9}')
        self.assertEqual(client.texts(), ["error: ack 9 is beyond the last entry sent (2)"])
        harness.press()
        self.assertEqual(client.readings(), [])  # still waiting for an ack: the window holds
        client.send('ack {"seq":2}')
        self.assertEqual(client.readings(), [(3, "button", 1)])


class BadFrameTests(SynchronousTestCase):
    def test_only_acks_and_heartbeats_after_subscribe(self) -> None:
        """After subscribe, anything but ack or heartbeat gets one error naming what is allowed."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(), "subscribe")
        client.texts()
        client.send(
            "go", "help", "subscribe", hello(), "reading {}", 'ack {"seq":"x"}', "ack", "ack [1]",
            "heartbeat now", b"\xff\xfe", "", "heartbeat", " ACK {\"seq\":1} ",
        )  # fmt: skip
        self.assertEqual(client.texts(), [
            ONLY_V2, ONLY_V2, ONLY_V2, ONLY_V2, ONLY_V2,
            f"error: ack: 'seq' must be a whole number from 0 to {v2.MAX_SEQ}",
            "error: ack needs a JSON object after it",
            "error: ack: expected a JSON object {...}, got list",
            "error: heartbeat takes nothing after it",
            "error: message is not valid UTF-8 (byte 0xff at offset 0)",
        ])  # fmt: skip
        self.assertFalse(client.transport.disconnecting)
        harness.press()
        self.assertEqual(client.readings(), [(3, "button", 1)])

    def test_frames_before_subscribe(self) -> None:
        """Before subscribe, a heartbeat gets no reply and an ack an error saying to subscribe first."""
        harness = Harness(self)
        client = harness.connect()
        client.send("heartbeat", 'ack {"seq":1}', "ping")
        self.assertEqual(client.texts(), [
            "error: ack: nothing was sent to acknowledge; send subscribe first", "pong",
        ])  # fmt: skip


class HeartbeatTests(SynchronousTestCase):
    def test_heartbeat_when_quiet(self) -> None:
        """With nothing to send for the interval the client asked for, the server sends heartbeat."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(2), "subscribe")
        client.texts()
        harness.step(1.9)
        client.send("heartbeat")
        self.assertEqual(client.texts(), [])
        harness.step(0.2)
        self.assertEqual(client.texts(), ["heartbeat"])
        harness.press()  # a reading goes out: the next heartbeat is due 2 s after it
        client.texts()
        client.send("heartbeat")
        harness.step(1.8)
        self.assertEqual(client.texts(), [])

    def test_silent_subscriber_aborted(self) -> None:
        """A subscriber silent for 3 of its heartbeat intervals is aborted; one that talks is kept."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(1), "subscribe")
        for _ in range(10):
            harness.step(0.9)
            client.send("heartbeat")
        self.assertFalse(client.aborted)
        harness.step(2.9)
        self.assertFalse(client.aborted)
        harness.step(0.2)
        self.assertTrue(client.aborted)

    def test_bare_subscriber_not_aborted_for_silence(self) -> None:
        """A subscriber that never announced heartbeats (no hello) gets them, not dropped for silence."""
        harness = Harness(self)
        client = harness.connect()
        client.send("subscribe")
        client.texts()
        harness.step(100)
        self.assertFalse(client.aborted)
        self.assertIn("heartbeat", client.texts())

    def test_no_timer_left_behind(self) -> None:
        """A subscriber that leaves stops its heartbeat and its publication."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(1), "subscribe")
        client.lose()
        calls = len(harness.clock.getDelayedCalls())
        harness.step(10)
        self.assertFalse(client.aborted)
        self.assertLessEqual(len(harness.clock.getDelayedCalls()), calls)
        self.assertEqual(harness.publishing.subscriptions, set())


class SlowSubscriberTests(SynchronousTestCase):
    def test_paused_then_resumed(self) -> None:
        """While the transport is paused nothing is sent; on resume everything follows, in order."""
        harness = Harness(self)
        client = harness.connect()
        client.send(hello(1), 'subscribe {"after":2}')
        client.texts()
        client.protocol.pauseProducing()
        harness.toggle(5)
        harness.step(5)  # longer than 3 heartbeats: paused is not silent, we read nothing either
        self.assertEqual(client.texts(), [])
        self.assertFalse(client.aborted)
        client.protocol.resumeProducing()
        self.assertEqual([r[0] for r in client.readings()], [3, 4, 5, 6, 7])

    def test_memory_bounded_while_paused(self) -> None:
        """A paused subscriber holds at most twice the window of readings, however many come."""
        harness = Harness(self, window=3)
        client = harness.connect()
        client.send('subscribe {"after":2}')
        client.protocol.pauseProducing()
        harness.toggle(40)
        sender = client.protocol.subscription.sender
        self.assertLessEqual(len(sender._cache), 6)
        self.assertEqual(sender.in_flight, 0)

    def test_dropped_after_max_lag_then_resumes_without_loss(self) -> None:
        """Paused longer than --max-subscriber-lag: dropped; reconnecting from its ack loses nothing."""
        harness = Harness(self, window=4, max_lag=30)
        client = harness.connect()
        client.send(hello(), 'subscribe {"after":0}')
        got = [f for f in client.frames() if isinstance(f, v2.Reading)]
        client.send(f'ack {{"seq":{got[-1].seq}}}')
        acked = got[-1].seq
        client.protocol.pauseProducing()
        harness.toggle(10)  # 1 s
        harness.step(28.9)
        self.assertFalse(client.aborted)
        harness.step(0.2)
        self.assertTrue(client.aborted)
        client.lose()
        again = harness.connect()
        again.send(hello(), f'subscribe {{"after":{acked}}}')
        received = [(f.seq, f.sensor, f.value) for f in again.frames() if isinstance(f, v2.Reading)]
        while len(received) < len(harness.entries()) - acked:
            again.send(f'ack {{"seq":{received[-1][0]}}}')
            received += again.readings()
        self.assertEqual([(s, n, v) for s, n, v in received], harness.entries()[acked:])


class V1Tests(SynchronousTestCase):
    def test_v1_commands_beside_a_subscriber(self) -> None:
        """A connection that did not subscribe gets the v1 replies, byte for byte, while another streams."""
        harness = Harness(self)
        subscriber = harness.connect()
        subscriber.send(hello(), "subscribe")
        client = harness.connect()
        client.send("go", "read door", "list", "ping")
        self.assertEqual(client.transport.value(), b"Button released\0closed\0button door\0pong\0")
        client.transport.clear()
        harness.press()
        self.assertEqual(client.transport.value(), b"")
        client.send("go")
        self.assertEqual(client.texts(), ["Button pressed"])


class LimitTests(SynchronousTestCase):
    def test_max_subscribers(self) -> None:
        """Beyond --max-subscribers, hello and subscribe are refused as busy; go still works; a slot frees."""
        harness = Harness(self, max_subscribers=1)
        first = harness.connect()
        first.send("subscribe")
        second = harness.connect()
        second.send(hello(), "subscribe", "go")
        busy = (
            "error: busy: 1 subscribers already (--max-subscribers); use go or read NAME, or "
            "subscribe later"
        )
        self.assertEqual(second.texts(), [busy, busy, "Button released"])
        first.lose()
        second.send("subscribe")
        self.assertEqual(len(second.frames()), 2)


class StatusTests(SynchronousTestCase):
    def test_status(self) -> None:
        """status: one line with the device, stream, journal file and bounds, gaps, every subscriber."""
        harness = Harness(self, max_entries=3, window=2)
        harness.toggle(5)  # entries 1..7, the journal keeps 5..7
        subscriber = harness.connect(peer="192.168.1.30")
        subscriber.send(hello(), 'subscribe {"after":5}')
        subscriber.send('ack {"seq":6}')
        asker = harness.connect(peer="127.0.0.1")  # on the Pi itself: it sees who subscribes
        asker.send("status")
        [line] = asker.texts()
        verb, _, body = line.partition(" ")
        self.assertEqual(verb, "status")
        self.assertEqual(json.loads(body), {
            "device": "pi-test", "stream": harness.stream, "journal": harness.path,
            "first": 5, "last": 7, "rows": 3,
            "gaps": [{"from": 1, "to": 4, "reason": "trimmed"}],
            "subscribers": 1,
            "subscriptions": [
                {"peer": subscriber.protocol.peer, "acked": 6, "in_flight": 1, "paused": False},
            ],
        })  # fmt: skip

    def test_status_hides_the_subscribers_addresses_from_other_clients(self) -> None:
        """A client that may only read sees each subscription's progress, not who it is."""
        harness = Harness(self)
        subscriber = harness.connect(peer="192.168.1.30")
        subscriber.send(hello(), "subscribe {}")
        asker = harness.connect(peer="192.168.1.40")
        asker.send("status")
        [line] = asker.texts()
        body = json.loads(line.partition(" ")[2])
        self.assertEqual([sorted(s) for s in body["subscriptions"]], [["acked", "in_flight", "paused"]])
        self.assertNotIn("192.168.1.30", line)


class EdgeSeamTests(SynchronousTestCase):
    def test_go_answered_without_a_read(self) -> None:
        """An input whose backend reports its changes is answered from what it reported: no read at all."""
        harness = Harness(self, edges=True)
        client = harness.connect()
        before = harness.backend.reads
        client.send("go")
        self.assertEqual(client.texts(), ["Button released"])
        harness.backend.set_level(BUTTON_PIN, False)
        client.send("go", "read button")
        self.assertEqual(client.texts(), ["Button pressed", "Button pressed"])
        self.assertEqual(harness.backend.reads, before)
        client.send("read door")
        self.assertEqual(client.texts(), ["closed"])
        self.assertEqual(harness.backend.reads, before)

    def test_edges_feed_the_journal(self) -> None:
        """Each reported change is a journal entry with the edge's time; nothing is read to find changes."""
        harness = Harness(self, edges=True)
        self.assertEqual(harness.state.tracked, {"button", "door"})
        self.assertIsNone(harness.publishing.sampler)  # nothing to poll
        subscriber = harness.connect()
        subscriber.send("subscribe")
        subscriber.frames()
        harness.clock.advance(0.05)
        harness.backend.set_level(BUTTON_PIN, False)  # between two samples
        harness.backend.set_level(BUTTON_PIN, True)
        harness.settle()
        self.assertEqual(subscriber.readings(), [(3, "button", 1), (4, "button", 0)])
        [pressed] = harness.journal.journal.after(2, 1)
        self.assertEqual(pressed.ts, v2.format_timestamp(START + 0.05))
        reads = harness.backend.reads
        for _ in range(10):
            harness.step()
        self.assertEqual(harness.backend.reads, reads)  # no polling: the driver tells


class _LateDriver:
    """A driver whose reports the test hands over when it likes (late, after commands that came since)."""

    def __init__(self) -> None:
        self.report = None

    def level(self, channel) -> bool:
        return True  # released: pulled up

    def watch(self, reactor, on_change) -> None:
        self.report = on_change

    def unwatch(self) -> None:
        self.report = None


class LearnedChangesTests(SynchronousTestCase):
    def test_late_reports_of_learned_changes_are_no_news(self) -> None:
        """
        sim press, release, press answered before the driver reported any of them (replies leave at
        once, the driver's reports come a turn later): each change is recorded once, not again when
        the late reports come.
        """
        driver = _LateDriver()
        state = InputState(Clock(), driver, [DEFAULT_INPUT])
        changes = []
        state.add_listener(lambda level: changes.append(level.high))
        state.startService()
        for high in (False, True, False):  # press, release, press
            state.learn(LevelChange(1.0, DEFAULT_INPUT.pin, high))
        state.learn(LevelChange(1.0, DEFAULT_INPUT.pin, False))  # press again: no change, no report
        for high in (False, True, False):
            driver.report(LevelChange(1.0, DEFAULT_INPUT.pin, high))
        self.assertEqual(changes, [False, True, False])
        driver.report(LevelChange(2.0, DEFAULT_INPUT.pin, True))  # a real release, at the pin
        self.assertEqual(changes, [False, True, False, True])
        self.assertEqual(state.known("button").high, True)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args: str):
        from rpisensor.app.tap import Options

        options = Options()
        options.parseOptions(["serve", "--gpio", "sim", *args])
        return options.subOptions

    def test_defaults(self) -> None:
        """The journal's options and the publishing ones, with their defaults."""
        options = self.parse()
        self.assertEqual(options["journal"], "rpisensor-journal.sqlite")
        self.assertEqual(options["journal-sync"], "batch")
        self.assertEqual(options["journal-max"], (1_000_000, None))
        self.assertEqual(options["poll-interval"], 0.1)
        self.assertEqual(options["max-subscribers"], 50)
        self.assertEqual(options["max-subscriber-lag"], 30.0)
        self.assertEqual(options["window"], 1000)
        settings = options.publish_settings("pi")
        self.assertEqual(settings, PublishSettings("pi", 1000, 0.1, 50, 30.0))
        self.assertIsNone(self.parse("--journal", "none").journal_settings().path)

    def test_bad_values(self) -> None:
        """Bad values are usage errors naming the option."""
        for args, text in [
            (("--poll-interval", "0"), "--poll-interval must be at least 0.001 seconds"),
            (("--poll-interval", "x"), "--poll-interval must be a number of seconds"),
            (("--max-subscribers", "-1"), "--max-subscribers must be at least 0"),
            (("--max-subscriber-lag", "0"), "--max-subscriber-lag must be more than 0 seconds"),
            (("--journal-sync", "sometimes"), "--journal-sync must be batch or full"),
        ]:
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(text, str(error))
