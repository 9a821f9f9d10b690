"""
The console's logic on Twisted doubles: lines typed become requests and
replies show in order; C{repeat} renews on a L{Clock} until the next line or
Ctrl-C, never piling requests on a slow link; the events connection shows
and acknowledges what the server pushes.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.request import RequestProtocol
from rpisensor.roles.console import ConsoleOptions
from rpisensor.roles.console.events import ConsoleEvents, describe
from rpisensor.roles.console.session import LOCAL_HELP, Console
from rpisensor.wire import v2
from tests.support import replies


class _Factory:
    def __init__(self, clock) -> None:
        self.clock = clock


class ConsoleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.server = RequestProtocol()
        self.server.factory = _Factory(self.clock)
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.shown: list[str] = []
        self.status: list[int] = []
        self.console = Console(self.clock, self.server, self.shown.append, self.status.append)

    def sent(self) -> list[bytes]:
        return replies(self.transport)

    def answer(self, *texts: str) -> None:
        for text in texts:
            self.server.dataReceived(text.encode() + b"\0")

    def test_commands_and_replies(self) -> None:
        self.console.line("set led on")
        self.console.line("   ")
        self.console.line("outputs")
        self.assertEqual(self.sent(), [b"set led on", b"outputs"])
        self.answer("led on", "led=on")
        self.assertEqual(self.shown, ["led on", "led=on"])

    def test_help_adds_the_console_commands(self) -> None:
        self.console.line("help")
        self.answer("commands: go | set NAME on|off")
        self.assertEqual(self.shown, ["commands: go | set NAME on|off", LOCAL_HELP])

    def test_repeat_until_the_next_line(self) -> None:
        """repeat sends at once, then every interval; the first reply shows, repeats of it do not."""
        self.console.line("repeat 0.2 set motor on")
        self.assertEqual(self.sent(), [b"set motor on"])
        self.answer("motor on")
        for _ in range(4):
            self.clock.advance(0.2)
            self.assertEqual(self.sent(), [b"set motor on"])
            self.answer("motor on")
        self.assertEqual(self.shown[1:], ["motor on"])
        self.console.line("")
        self.assertEqual(self.shown[-1], "console: stopped repeating 'set motor on' (sent 5 times)")
        self.clock.advance(1)
        self.assertEqual(self.sent(), [])

    def test_repeat_shows_what_differs(self) -> None:
        self.console.line("repeat 0.2 set motor on")
        self.answer("motor on")
        self.clock.advance(0.2)
        self.answer("error: the outputs are claimed by 10.0.0.2:5000; wait until it sends release or disconnects")
        self.assertTrue(self.shown[-1].startswith("error: the outputs are claimed"))

    def test_repeat_waits_for_the_reply(self) -> None:
        """A reply that has not come holds the next send: nothing piles up on a slow link."""
        self.console.line("repeat 0.1 set motor on")
        self.clock.advance(0.1)
        self.clock.advance(0.1)
        self.assertEqual(self.sent(), [b"set motor on"])
        self.answer("motor on")
        self.clock.advance(0.1)
        self.assertEqual(self.sent(), [b"set motor on"])

    def test_another_line_stops_the_repeat_and_runs(self) -> None:
        self.console.line("repeat 0.2 set motor on")
        self.answer("motor on")
        self.console.line("stop")
        self.assertEqual(self.sent(), [b"set motor on", b"stop"])
        self.clock.advance(1)
        self.assertEqual(self.sent(), [])

    def test_interrupt(self) -> None:
        """Ctrl-C stops a repeat; without one, it leaves."""
        self.console.line("repeat 0.2 set motor on")
        self.console.interrupt()
        self.assertEqual(self.status, [])
        self.console.interrupt()
        self.assertEqual(self.status, [0])

    def test_bad_repeats(self) -> None:
        for line in ("repeat", "repeat 0.2", "repeat x set motor on", "repeat 0.001 set motor on"):
            self.console.line(line)
        self.assertEqual(len(self.shown), 4)
        self.assertTrue(all(text.startswith("console: usage: repeat SECONDS COMMAND") for text in self.shown))
        self.assertEqual(self.sent(), [])

    def test_end_of_input_waits_for_replies(self) -> None:
        self.console.line("set led on")
        self.console.end_of_input()
        self.assertEqual(self.status, [])
        self.answer("led on")
        self.assertEqual((self.shown, self.status), (["led on"], [0]))

    def test_quit(self) -> None:
        self.console.line("quit")
        self.assertEqual(self.status, [0])
        self.console.line("set led on")
        self.assertEqual(self.sent(), [])

    def test_server_gone_and_back(self) -> None:
        """The console says so and goes on: a repeat stops, a line typed meanwhile is not sent, and says so."""
        self.console.line("repeat 0.2 set motor on")
        self.console.line("outputs")
        self.server.connectionLost(Failure(ConnectionDone()))
        self.console.connection_lost("lost the connection to pi:22000 (the other end closed the connection); "
                                     "reconnecting")  # fmt: skip
        self.assertEqual(self.shown, [
            "console: sending 'set motor on' every 0.2 s; Enter or Ctrl-C stops",
            "console: stopped repeating 'set motor on' (sent 1 times)",
            "console: no reply to 'set motor on': the connection dropped",
            "console: no reply to 'outputs': the connection dropped",
            "console: lost the connection to pi:22000 (the other end closed the connection); reconnecting",
        ])  # fmt: skip
        self.assertEqual(self.status, [])
        self.console.line("outputs")
        self.assertEqual(self.shown[-1], "console: not connected (reconnecting): 'outputs' was not sent")
        again = RequestProtocol()
        again.factory = _Factory(self.clock)
        transport = StringTransport()
        again.makeConnection(transport)
        self.console.connected(again, "connected to pi:22000 again")
        self.assertEqual(self.shown[-1], "console: connected to pi:22000 again")
        self.console.line("outputs")
        self.assertEqual(replies(transport), [b"outputs"])

    def test_a_closed_output_leaves(self) -> None:
        self.console.output_closed()
        self.assertEqual(self.status, [0])


class EventsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.shown: list[str] = []
        self.gave_up: list[bool] = []
        self.events = ConsoleEvents(self.shown.append, lambda: self.gave_up.append(True))

    def test_shows_each_entry(self) -> None:
        snapshot = v2.parse('reading {"stream":"s","seq":4,"ts":"2026-12-01T19:33:25.123Z","synced":true,'
                            '"sensor":"led","value":0,"text":"off","snapshot":true}')  # fmt: skip
        self.events.reading(snapshot, "pi")
        self.events.reading(v2.Reading(sensor="led", value=1, text="on", ts="2026-12-01T19:33:26.000Z", synced=True,
                                              stream="s", seq=5), "pi")
        self.events.gap(v2.Gap(stream="s", first=6, last=9, reason="trimmed"), "pi")
        self.assertEqual(self.shown, ["* led: off (state when subscribed)", "* led: on",
                                      "* readings 6 to 9 are missing (trimmed)"])  # fmt: skip

    def test_a_unit_is_shown_once(self) -> None:
        """The text of a measurement carries its unit already: C{48.17 °C}, not C{48.17 °C °C}."""
        cpu = v2.Reading(sensor="cpu", value=48.17, text="48.17 °C", unit="°C", ts="2026-12-01T19:33:27.000Z",
                         synced=True, stream="s", seq=7)
        self.assertEqual(describe(cpu), "* cpu: 48.17 °C")

    def test_no_journal(self) -> None:
        self.events.unusable("error: this server keeps no journal, so it cannot stream; use go or read NAME")
        self.assertEqual(self.shown, ["console: no pushed events: this server keeps no journal, so it "
                                      "cannot stream; use go or read NAME"])  # fmt: skip
        self.assertEqual(self.gave_up, [True])


class OptionsTests(SynchronousTestCase):
    def test_endpoint(self) -> None:
        options = ConsoleOptions()
        options.parseOptions(["raspberrypi.local:22000"])
        self.assertEqual(options["endpoint"], "tcp:host=raspberrypi.local:port=22000")
        self.assertFalse(options["no-events"])

    def test_options_after_the_endpoint(self) -> None:
        """As for query: options may come after the endpoint."""
        options = ConsoleOptions()
        options.parseOptions(["raspberrypi.local:22000", "--no-events", "-t", "3"])
        self.assertEqual((options["endpoint"], options["no-events"], options["timeout"]),
                         ("tcp:host=raspberrypi.local:port=22000", True, 3.0))  # fmt: skip
