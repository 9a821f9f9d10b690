"""
The pieces of the remote programs on Twisted's doubles: serve's C{pins}
reply (written, read back, fuzzed), the follower that C{watch} and the
gpiozero pin factory share (where it starts, what it drops, what it
acknowledges), C{watch}'s lines, and the pin factory's settings.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.control.outputs import OutputSpec
from rpisensor.gpiozero.endpoint import _arguments, endpoint_for
from rpisensor.remote.follow import Audience, FollowFactory
from rpisensor.roles.serve.pins import board_revision
from rpisensor.roles.watch import Printer, WatchOptions
from rpisensor.sensing.inputs import InputSpec
from rpisensor.testing import send_message, start_server
from rpisensor.wire import layout, v2
from tests.certs import write_pki
from tests.support import replies

STREAM = "8f3a1c2e9b7d4a60"


def reading(seq: int, sensor: str = "button", value: int = 1, snapshot: bool = False, stream: str = STREAM) -> str:
    text = "Button pressed" if value else "Button released"
    return v2.encode(v2.Reading(sensor=sensor, value=value, text=text, ts="2026-12-01T19:33:25.123Z", synced=True,
                                stream=stream, seq=seq, snapshot=snapshot))  # fmt: skip


# -- the pins reply -------------------------------------------------------------------------


class LayoutTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        written = layout.PinLayout(
            inputs=(layout.InputPin("button", 8, "up", True, 0.02), layout.InputPin("pir", 4, "down", False)),
            outputs=(layout.OutputPin("led", 18), layout.OutputPin("motor", 23, True, 0.5, 50.0)),
            sensors=(layout.SensorInfo("room", "°C"),),
            pwm=True, control=True, revision="d04170",
        )  # fmt: skip
        text = layout.encode(written)
        self.assertTrue(text.startswith('pins {"inputs":[{"name":"button","gpio":8,"pull":"up","active":"low",'
                                        '"debounce":20}'))  # fmt: skip
        self.assertEqual(layout.parse(text), written)

    def test_errors_say_what_is_wrong(self) -> None:
        cases = {
            "error: unknown command 'pins'; send 'help' for the list": "older than remote pins; upgrade it",
            "Button pressed": "expected a pins reply, got 'Button pressed'",
            "pins [1]": "expected a JSON object",
            'pins {"inputs":[{"name":"b","gpio":99}]}': "'gpio' of 'b' must be a BCM number, got 99",
            'pins {"inputs":[{"name":"b","gpio":2,"pull":"sideways"}]}': "'pull' of 'b' must be one of up, down, off",
            'pins {"outputs":[{"name":"m","gpio":2,"ttl":-1}]}': "'ttl' of 'm' must be a number of 0 or more",
            'pins {"pwm":"yes"}': "'pwm' must be true or false",
            'pins {"revision":"pi5"}': "'revision' must be a hex board revision",
        }
        for text, expected in cases.items():
            with self.assertRaises(layout.LayoutError) as raised:
                layout.parse(text)
            self.assertIn(expected, str(raised.exception), text)

    @given(st.text(max_size=200))
    def test_any_text_is_a_layout_or_a_layout_error(self, text: str) -> None:
        for candidate in (text, "pins " + text):
            try:
                layout.parse(candidate)
            except layout.LayoutError:
                pass

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(st.sampled_from(["inputs", "outputs", "sensors", "name", "gpio", "pull",
                                                           "active", "debounce", "safe", "ttl", "freq", "unit",
                                                           "pwm", "control", "revision"]), children, max_size=6),
                        max_leaves=20))  # fmt: skip
    def test_any_json_is_a_layout_or_a_layout_error(self, body) -> None:
        try:
            text = "pins " + json.dumps(body)
        except ValueError:
            return
        try:
            layout.parse(text)
        except layout.LayoutError:
            pass

    def test_the_board_revision_from_cpuinfo(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("processor\t: 0\nHardware\t: BCM2835\nRevision\t: d04170\nSerial\t: 1\n")
        self.assertEqual(board_revision.__wrapped__(Path(path)), "d04170")
        with open(path, "w") as f:
            f.write("processor\t: 0\nmodel name\t: AMD EPYC\n")
        self.assertIsNone(board_revision.__wrapped__(Path(path)))


@pytest_twisted.ensureDeferred
async def test_serve_answers_pins_in_bcm_whatever_its_numbering():
    server = await start_server(
        inputs=[InputSpec("button", 24), InputSpec("pir", 7, pull="down", active_low=False, debounce=0.05)],
        outputs=[OutputSpec("led", 12), OutputSpec("motor", 16, ttl=0.5)],
    )  # fmt: skip
    try:
        got = layout.parse(await send_message(server.port, "pins"))
    finally:
        await server.stop()
    assert got.inputs == (layout.InputPin("button", 8), layout.InputPin("pir", 4, "down", False, 0.05))
    assert got.outputs == (layout.OutputPin("led", 18), layout.OutputPin("motor", 23, False, 0.5))
    assert got.control is True  # a loopback client
    assert got.pwm is False  # start_server's simulated pins have no PWM (serve --gpio sim's do)


def test_the_board_gpiozero_sees():
    """The Pi's revision, each declared pin also by its name on the Pi; an unknown revision: a 40-pin header."""
    from rpisensor.gpiozero.factory import board_info

    pins = layout.PinLayout(inputs=(layout.InputPin("button", 2),), outputs=(layout.OutputPin("GPIO4", 17),),
                            revision="d04170")  # fmt: skip
    info = board_info(pins)
    assert info.model == "5B"
    assert [p.name for _, p in info.find_pin("button")] == ["GPIO2"]
    assert [p.name for _, p in info.find_pin("GPIO4")] == ["GPIO4"]  # a gpiozero name keeps its meaning
    assert board_info(layout.PinLayout(revision="ff")).model == "3B"  # unknown to gpiozero: its mock board


# -- the follower ------------------------------------------------------------------------------


class Recorder(Audience):
    def __init__(self) -> None:
        self.events: list = []

    def welcomed(self, welcome, after) -> None:
        self.events.append(("welcomed", welcome.stream, after))

    def reading(self, reading, device) -> None:
        self.events.append(("reading", reading.seq, reading.snapshot))

    def gap(self, gap, device) -> None:
        self.events.append(("gap", gap.first, gap.last))

    def lost(self) -> None:
        self.events.append(("lost",))

    def unusable(self, why) -> None:
        self.events.append(("unusable", why))


class FollowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.audience = Recorder()
        self.factory = FollowFactory(self.audience, self.clock, heartbeat=10)

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def welcome(self, protocol, last: int, stream: str = STREAM) -> None:
        protocol.dataReceived(v2.encode(v2.Welcome(device="pi", stream=stream, first=1, last=last)).encode() + b"\0")

    def push(self, protocol, *frames: str) -> None:
        protocol.dataReceived(b"".join(frame.encode() + b"\0" for frame in frames))

    def test_a_live_view_then_a_resume_after_the_last_seen(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(replies(transport), [b'hello {"v":2,"role":"subscribe","heartbeat":10}'])
        self.welcome(protocol, last=41)
        self.assertEqual(replies(transport), [b"subscribe {}"])
        self.push(protocol, reading(40, snapshot=True), reading(41, "door", snapshot=True), reading(42), reading(43))
        self.assertEqual(replies(transport), [b'ack {"seq":42}', b'ack {"seq":43}'])  # snapshots are not acked
        protocol.connectionLost(None)
        protocol, transport = self.connect()
        replies(transport)
        self.welcome(protocol, last=45)
        self.assertEqual(replies(transport), [b'subscribe {"after":43}'])
        self.push(protocol, reading(43), reading(44))  # 43 came already: dropped (and acked)
        self.assertEqual(self.audience.events, [
            ("welcomed", STREAM, None), ("reading", 40, True), ("reading", 41, True), ("reading", 42, False),
            ("reading", 43, False), ("lost",), ("welcomed", STREAM, 43), ("reading", 44, False),
        ])  # fmt: skip

    def test_where_asked_then_a_new_stream_from_its_start(self) -> None:
        self.factory.after = 5
        self.factory.new_stream_from_start = True
        protocol, transport = self.connect()
        self.welcome(protocol, last=9)
        self.assertEqual(replies(transport)[-1], b'subscribe {"after":5}')
        protocol.connectionLost(None)
        protocol, transport = self.connect()
        self.welcome(protocol, last=3, stream="0000111122223333")
        self.assertEqual(replies(transport)[-1], b'subscribe {"after":0}')

    def test_a_resume_point_beyond_the_stream_is_unusable(self) -> None:
        self.factory.after = 50
        protocol, transport = self.connect()
        self.welcome(protocol, last=9)
        self.assertEqual(self.audience.events, [("unusable", f"nothing after 50 in stream {STREAM}: it ends at 9")])
        self.assertTrue(transport.disconnecting)

    def test_a_journal_behind_what_was_seen_gives_a_live_view(self) -> None:
        protocol, _ = self.connect()
        self.welcome(protocol, last=10)
        self.push(protocol, reading(11))
        protocol.connectionLost(None)
        protocol, transport = self.connect()
        self.welcome(protocol, last=4)  # restored from an old copy
        self.assertEqual(replies(transport)[-1], b"subscribe {}")

    def test_after_a_gap_a_mirror_starts_again_from_a_live_view(self) -> None:
        self.factory.live_after_gap = True
        protocol, transport = self.connect()
        self.welcome(protocol, last=10)
        self.push(protocol, v2.encode(v2.Gap(stream=STREAM, first=11, last=20, reason="trimmed")))
        self.assertEqual(replies(transport)[-1], b'ack {"seq":20}')
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        protocol, transport = self.connect()
        self.welcome(protocol, last=30)
        self.assertEqual(replies(transport)[-1], b"subscribe {}")

    def test_not_a_serve(self) -> None:
        protocol, transport = self.connect()
        self.push(protocol, "error: hello: collect takes role 'report'")
        self.assertEqual(self.audience.events[0][0], "unusable")
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.connect()
        self.clock.advance(10)  # nothing at all: the tutorial's DataServer1
        self.assertIn("no answer to hello within 10 s", self.audience.events[-1][1])

    def test_heartbeats_both_ways(self) -> None:
        protocol, transport = self.connect()
        self.welcome(protocol, last=1)
        replies(transport)
        self.clock.advance(10)
        self.assertEqual(replies(transport), [b"heartbeat"])
        self.clock.advance(20)  # nothing from the server for three intervals: dead
        self.assertTrue(transport.disconnecting or transport.disconnected)


# -- watch's lines ---------------------------------------------------------------------------------


class _Pipe(io.StringIO):
    """A stdout whose reader went away after C{lines} lines (| head)."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self._left = lines

    def write(self, text: str) -> int:
        if self._left == 0:
            raise BrokenPipeError(32, "Broken pipe")
        self._left -= 1
        return super().write(text)

    def fileno(self) -> int:
        return os.open(os.devnull, os.O_WRONLY)


class WatchPrinterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out, self.err, self.status = io.StringIO(), io.StringIO(), []

    def printer(self, as_json: bool = False, out=None) -> Printer:
        return Printer("pi:22000", as_json, self.status.append, out or self.out, self.err)

    def test_one_line_per_reading(self) -> None:
        printer = self.printer()
        printer.welcomed(v2.Welcome(device="pi", stream=STREAM, first=1, last=5), None)
        printer.reading(v2.parse(reading(5)), "pi")
        cpu = v2.Reading(sensor="cpu", value=48.17, text="48.17 °C", unit="°C", ts="2026-12-01T19:33:26.000Z",
                         synced=True, stream=STREAM, seq=6)  # fmt: skip
        printer.reading(cpu, "pi")
        printer.gap(v2.Gap(stream=STREAM, first=7, last=9, reason="trimmed"), "pi")
        self.assertEqual(self.out.getvalue().splitlines(), [
            "2026-12-01T19:33:25.123Z button Button pressed", "2026-12-01T19:33:26.000Z cpu 48.17 °C",
        ])  # fmt: skip
        self.assertEqual(self.err.getvalue().splitlines(), [
            f"rpisensor watch: following stream {STREAM} of pi: the latest reading of each sensor, then every change",
            f"rpisensor watch: readings 7 to 9 of stream {STREAM} will never come (trimmed)",
        ])  # fmt: skip

    def test_json_lines(self) -> None:
        printer = self.printer(as_json=True)
        printer.reading(v2.parse(reading(5, snapshot=True)), "pi")
        printer.gap(v2.Gap(stream=STREAM, first=7, last=9, reason="trimmed"), "pi")
        first, second = map(json.loads, self.out.getvalue().splitlines())
        self.assertEqual(first, {"kind": "reading", "device": "pi", "stream": STREAM, "seq": 5,
                                 "ts": "2026-12-01T19:33:25.123Z", "synced": True, "sensor": "button", "value": 1,
                                 "text": "Button pressed", "unit": None, "snapshot": True})  # fmt: skip
        self.assertEqual(second, {"kind": "gap", "device": "pi", "stream": STREAM, "from": 7, "to": 9,
                                  "reason": "trimmed"})  # fmt: skip

    def test_a_closed_pipe_ends_quietly(self) -> None:
        printer = self.printer(out=_Pipe(1))
        printer.reading(v2.parse(reading(1)), "pi")
        printer.reading(v2.parse(reading(2)), "pi")
        self.assertEqual(self.status, [0])
        self.assertEqual(self.err.getvalue(), "")

    def test_unusable_ends_with_1(self) -> None:
        self.printer().unusable("nothing after 50 in stream x: it ends at 9")
        self.assertEqual(self.status, [1])
        self.assertIn("pi:22000: nothing after 50", self.err.getvalue())

    def test_options(self) -> None:
        options = WatchOptions()
        options.parseOptions(["pi:22000", "--json", "--after", "0"])
        self.assertEqual((options["endpoint"], options["json"], options["after"]),
                         ("tcp:host=pi:port=22000", True, 0))  # fmt: skip


# -- the pin factory's settings ----------------------------------------------------------------


class EndpointSettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        saved = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(saved)))
        for name in ("RPISENSOR_ENDPOINT", "RPISENSOR_HOST", "RPISENSOR_PORT", "RPISENSOR_TLS_TRUST",
                     "RPISENSOR_TLS_CERT", "RPISENSOR_TLS_KEY"):  # fmt: skip
            os.environ.pop(name, None)

    def test_defaults_and_environment(self) -> None:
        self.assertEqual(endpoint_for(), "tcp:host=localhost:port=22000")
        self.assertEqual(endpoint_for("pi.local", 22001), "tcp:host=pi.local:port=22001")
        trust = os.path.abspath(self.mktemp() + ":1")
        paths = write_pki(trust)
        os.environ["RPISENSOR_HOST"], os.environ["RPISENSOR_PORT"] = "10.0.0.5", "22443"
        os.environ["RPISENSOR_TLS_TRUST"] = paths.trust_dir
        description = endpoint_for()
        self.assertEqual(description, f"tls:host=10.0.0.5:port=22443:trustRoots={paths.trust_dir.replace(':', chr(92) + ':')}")
        self.assertEqual(_arguments(description),
                         {"host": "10.0.0.5", "port": "22443", "trustRoots": paths.trust_dir})  # fmt: skip
        os.environ["RPISENSOR_TLS_TRUST"] = trust + "/none"
        with self.assertRaisesRegex(ValueError, "No such file or directory"):
            endpoint_for()

    def test_bad_settings_say_which(self) -> None:
        with self.assertRaisesRegex(ValueError, r"RPISENSOR_PORT\) must be a number from 1 to 65535, got 'x'"):
            endpoint_for("pi", "x")
        with self.assertRaisesRegex(ValueError, r"RPISENSOR_ENDPOINT\) 22000: .*did you mean tcp:host=HOST:port=22000"):
            endpoint_for(endpoint="22000")
        with self.assertRaisesRegex(ValueError, r"endpoint= is not taken by remote pins"):
            endpoint_for(endpoint="tls:host=pi:port=1:endpoint=tcp\\:pi\\:1")


# -- the pin factory's threads ---------------------------------------------------------------


def test_a_reactor_thread_of_its_own():
    """Calls cross to its thread and wait for the answer, a Deferred's too; errors come back; a call gets an answer or CallTimeout."""
    import threading

    from twisted.internet.defer import Deferred

    from rpisensor.gpiozero.threads import CallTimeout, ReactorThread

    thread = ReactorThread("test-reactor")
    thread.start()
    try:
        assert thread.call(lambda: threading.current_thread().name, timeout=30) == "test-reactor"
        assert thread.call(lambda: thread.reactor.callLater(0, lambda: None) and "later", timeout=30) == "later"
        assert thread.reactor.seconds() <= __import__("time").monotonic()  # scheduling on the monotonic clock

        def fails():
            raise ValueError("no such pin")

        try:
            thread.call(fails, timeout=30)
        except ValueError as e:
            assert str(e) == "no such pin"
        else:
            raise AssertionError("the error did not come back")
        try:
            thread.call(Deferred, timeout=0.1)  # never fires
        except CallTimeout:
            pass
        else:
            raise AssertionError("no CallTimeout")
    finally:
        thread.stop(30)
    assert not thread.alive


def test_a_dispatcher_goes_on_after_a_failing_listener(capsys):
    import threading

    from rpisensor.gpiozero.threads import Dispatcher

    got, done = [], threading.Event()

    def listener(n: int) -> None:
        if n == 2:
            raise RuntimeError("a program's callback failed")
        got.append(n)
        if n == 4:
            done.set()

    dispatcher = Dispatcher("test-events")
    dispatcher.add_listener(listener)
    dispatcher.start()
    for n in range(1, 5):
        dispatcher.put(n)
    assert done.wait(30)
    dispatcher.stop(30)
    assert got == [1, 3, 4]
    assert "RuntimeError: a program's callback failed" in capsys.readouterr().err


def test_without_gpiozero_the_extra_is_named(monkeypatch):
    """rpisensor.gpiozero imports gpiozero only when a name is used, and says how to get it."""
    import importlib
    import sys

    for name in [m for m in sys.modules if m == "gpiozero" or m.startswith(("gpiozero.", "rpisensor.gpiozero"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # as if not installed
    package = importlib.import_module("rpisensor.gpiozero")
    try:
        package.RpisensorFactory
    except ImportError as e:
        assert "pip install 'rpisensor[gpiozero]'" in str(e)
    else:
        raise AssertionError("no ImportError")
