"""
Remote control of outputs (C{serve --output}) on Twisted doubles: a
L{Clock} for every timer, connections on L{StringTransport}s, simulated pins
whose output levels the tests read. Deadman expiry and renewal, disconnect
to safe, claims, the rate limit, address and certificate grants, and every
bad input's own C{error:} reply.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import crypto
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rpisensor.control.controller import OutputController
from rpisensor.control.outputs import Level, OutputSpec, parse_output
from rpisensor.control.rate import CommandRate
from rpisensor.hw.simulated import SimulatedGPIO, SimulatedPWMGPIO
from rpisensor.net.access import ControlGrants, parse_network
from rpisensor.net.limits import ListenSettings
from rpisensor.roles.serve.options import ServeOptions
from rpisensor.roles.serve.service import SensorServerFactory
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.reader import InputReader
from rpisensor.testing import FakeRunner
from rpisensor.testing._runners import inline_runner
from tests.certs import make_pki
from tests.support import replies

LED = OutputSpec("led", 12)  # BOARD 12: a latch
MOTOR = OutputSpec("motor", 16, ttl=0.5)  # BOARD 16: a deadman
GATE = OutputSpec("gate", 18, safe=True)  # BOARD 18: safe when high


class ControlHarness:
    """A server with outputs on simulated pins; writes run at once (or by hand, with C{runner})."""

    def __init__(self, outputs=(LED, MOTOR, GATE), pwm=True, runner=None, grants=None,
                 control_rate=20.0, max_ttl=60.0):  # fmt: skip
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        backend_class = SimulatedPWMGPIO if pwm else SimulatedGPIO
        self.backend = backend_class(clock=self.clock)
        self.reader = InputReader(self.backend, [DEFAULT_INPUT], FakeRunner(), self.clock, wall=self.clock.seconds)
        self.reader.setup()
        self.controller = OutputController(
            self.backend, outputs, runner or inline_runner, self.clock, max_ttl, wall=self.clock.seconds
        )
        self.controller.setup()
        self.factory = SensorServerFactory(
            self.reader, ListenSettings(), controller=self.controller, grants=grants,
            control_rate=control_rate,
        )  # fmt: skip

    def connect(self, peer: str = "127.0.0.1", port: int = 40000, transport=None):
        protocol = self.factory.buildProtocol(None)
        transport = transport or StringTransport(peerAddress=IPv4Address("TCP", peer, port))
        protocol.makeConnection(transport)
        return protocol, transport

    def ask(self, connection, *commands: str) -> list[str]:
        protocol, transport = connection
        for command in commands:
            protocol.dataReceived(command.encode() + b"\0")
        return [reply.decode() for reply in replies(transport)]

    def timers(self) -> list:
        """The outputs' timers waiting on the clock (not the server's own, such as its idle sweep)."""
        return [call for call in self.clock.getDelayedCalls() if call.func == self.controller._due]

    def high(self, spec: OutputSpec) -> bool:
        return self.backend.level(spec.pin)

    def disconnect(self, connection) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        protocol, transport = connection
        transport.loseConnection()
        protocol.connectionLost(Failure(ConnectionDone()))


class OutputOptionTests(SynchronousTestCase):
    """C{--output NAME=PIN[,safe=off|on][,ttl=SECONDS][,freq=HZ]} and the options around it."""

    def test_latch_and_deadman(self) -> None:
        self.assertEqual(parse_output("led=12"), OutputSpec("led", 12))
        self.assertEqual(parse_output("motor=16,ttl=0.5,safe=on,freq=50"),
                         OutputSpec("motor", 16, safe=True, ttl=0.5, frequency=50.0))  # fmt: skip

    def test_bad_outputs(self) -> None:
        for text, detail in [
            ("led", "expected NAME=PIN"),
            ("led=x", "must be a number"),
            ("led=1", "power or ground"),
            ("led=12,safe=maybe", "safe must be off or on"),
            ("led=12,ttl=0", "ttl must be a number of more than 0"),
            ("led=12,ttl=nan", "ttl must be a number of more than 0"),
            ("led=12,colour=red", "unknown setting"),
        ]:
            with self.assertRaises(ValueError, msg=text) as caught:
                parse_output(text)
            self.assertIn(detail, str(caught.exception), text)

    def parse(self, *argv: str) -> ServeOptions:
        options = ServeOptions()
        options.parseOptions(list(argv))
        return options

    def assertUsageError(self, argv, detail: str) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            self.parse(*argv)
        self.assertIn(detail, str(caught.exception))

    def test_serve_options(self) -> None:
        options = self.parse("--output", "led=12", "--output", "motor=16,ttl=0.5", "--max-ttl", "5")
        self.assertEqual([spec.name for spec in options["outputs"]], ["led", "motor"])
        self.assertEqual(options["max-ttl"], 5.0)
        grants = options.control_grants()
        self.assertEqual(grants.networks, (parse_network("127.0.0.0/8"), parse_network("::1")))

    def test_bcm_numbering(self) -> None:
        options = self.parse("--numbering", "bcm", "--output", "led=18")
        self.assertEqual(options["outputs"][0].pin, 18)

    def test_usage_errors(self) -> None:
        self.assertUsageError(["--output", "led=24"], "already input 'button'")
        self.assertUsageError(["--output", "button=12"], "already input 'button'")
        self.assertUsageError(["--sensor", "cpu=cpu", "--output", "cpu=12"], "already sensor 'cpu'")
        self.assertUsageError(["--output", "a=12", "--output", "b=12"], "already output 'a'")
        self.assertUsageError(["--output", "a=12", "--output", "a=16"], "already output 'a'")
        self.assertUsageError(["--output", "m=16,ttl=10", "--max-ttl", "5"], "over --max-ttl 5")
        self.assertUsageError(["--control-cert", "pc"], "--control-cert needs --client-ca")
        self.assertUsageError(["--control-allow", "nonsense"], "--control-allow")
        self.assertUsageError(["--control-rate", "0"], "--control-rate must be more than 0")


class OutputBehaviourTests(SynchronousTestCase):
    """Latches, deadmen, pulses and PWM, on a Clock."""

    def setUp(self) -> None:
        self.pi = ControlHarness()
        self.client = self.pi.connect()

    def test_safe_at_start_up(self) -> None:
        """Each output drives its safe level from set-up on: off, or on for safe=on."""
        self.assertEqual(self.pi.backend.outputs, {12, 16, 18})
        self.assertEqual((self.pi.high(LED), self.pi.high(MOTOR), self.pi.high(GATE)), (False, False, True))
        self.assertEqual(self.pi.ask(self.client, "outputs"), ["led=off motor=off gate=on"])

    def test_latch_keeps_its_level(self) -> None:
        """A latch stays as set, for ever and after its client disconnects."""
        self.assertEqual(self.pi.ask(self.client, "set led on"), ["led on"])
        self.assertTrue(self.pi.high(LED))
        self.pi.clock.advance(3600)
        self.pi.disconnect(self.client)
        self.assertTrue(self.pi.high(LED))
        other = self.pi.connect(port=40001)
        self.assertEqual(self.pi.ask(other, "outputs", "set led off", "outputs"),
                         ["led=on motor=off gate=on", "led off", "led=off motor=off gate=on"])  # fmt: skip
        self.assertFalse(self.pi.high(LED))

    def test_deadman_expires(self) -> None:
        """A deadman set on goes back to safe once its ttl passes without renewal, and not before."""
        self.assertEqual(self.pi.ask(self.client, "set motor on"), ["motor on"])
        self.pi.clock.advance(0.49)
        self.assertTrue(self.pi.high(MOTOR))
        with capturedLogs() as events:
            self.pi.clock.advance(0.02)
        self.assertFalse(self.pi.high(MOTOR))
        self.assertEqual(self.pi.ask(self.client, "outputs"), ["led=off motor=off gate=on"])
        self.assertTrue(any("no command renewed it within its ttl of 0.5 s" in str(e.get("why")) for e in events))

    def test_renewal_moves_one_timer(self) -> None:
        """Renewals keep a deadman on; each output has one timer, however many commands came."""
        for _ in range(10):
            self.assertEqual(self.pi.ask(self.client, "set motor on"), ["motor on"])
            self.pi.clock.advance(0.3)
            self.assertTrue(self.pi.high(MOTOR))
            self.assertEqual(len(self.pi.timers()), 1)
        self.pi.clock.advance(0.21)
        self.assertFalse(self.pi.high(MOTOR))
        self.assertEqual(self.pi.timers(), [])

    def test_set_safe_ends_the_deadman(self) -> None:
        self.pi.ask(self.client, "set motor on")
        self.assertEqual(self.pi.ask(self.client, "set motor off"), ["motor off"])
        self.assertEqual(self.pi.timers(), [])

    def test_disconnect_makes_its_deadmen_safe(self) -> None:
        """The driving client's disconnect makes its deadman safe at once; its latch stays."""
        self.pi.ask(self.client, "set motor on", "set led on")
        self.pi.disconnect(self.client)
        self.assertFalse(self.pi.high(MOTOR))
        self.assertTrue(self.pi.high(LED))
        self.assertEqual(self.pi.timers(), [])

    def test_disconnect_of_another_client(self) -> None:
        """Only the client that drives a deadman stops it by leaving."""
        other = self.pi.connect(port=40001)
        self.pi.ask(self.client, "set motor on")
        self.pi.ask(other, "set motor on")  # the driver is now the other client
        self.pi.disconnect(self.client)
        self.assertTrue(self.pi.high(MOTOR))
        self.pi.disconnect(other)
        self.assertFalse(self.pi.high(MOTOR))

    def test_command_ttl(self) -> None:
        """ttl= shortens a deadman, or makes a latch one; never past its own ttl or --max-ttl."""
        self.assertEqual(
            self.pi.ask(self.client, "set led on ttl=2", "set motor on ttl=0.1", "set motor on ttl=1",
                        "set led on ttl=61", "set led on ttl=0", "set led on time=2", "set led on ttl=x"),
            ["led on", "motor on",
             "error: ttl=1 is over motor's own ttl (0.5 s): a command may shorten a deadman, not lengthen it",
             "error: ttl=61 is over the longest this server allows (60 s, --max-ttl)",
             "error: ttl must be more than 0 seconds, got 0",
             "error: set: expected ttl=SECONDS after the level, got 'time=2'",
             "error: set: ttl must be a number, got 'x'"],
        )  # fmt: skip
        self.pi.clock.advance(0.11)
        self.assertFalse(self.pi.high(MOTOR))
        self.assertTrue(self.pi.high(LED))
        self.pi.clock.advance(2)
        self.assertFalse(self.pi.high(LED))

    def test_pulse(self) -> None:
        """A pulse drives the non-safe level for its length, then the safe one: off, or on for safe=on."""
        self.assertEqual(self.pi.ask(self.client, "pulse led 200", "pulse gate 100"),
                         ["led on for 200 ms", "gate off for 100 ms"])  # fmt: skip
        self.assertEqual((self.pi.high(LED), self.pi.high(GATE)), (True, False))
        self.pi.clock.advance(0.1)
        self.assertEqual((self.pi.high(LED), self.pi.high(GATE)), (True, True))
        self.pi.clock.advance(0.1001)  # (0.1 + 0.1 may fall short of 0.2 in floating point)
        self.assertFalse(self.pi.high(LED))

    def test_pulse_on_a_deadman_is_cut_at_its_ttl(self) -> None:
        self.pi.ask(self.client, "pulse motor 2000")
        self.pi.clock.advance(0.5)
        self.assertFalse(self.pi.high(MOTOR))

    def test_bad_pulses(self) -> None:
        self.assertEqual(
            self.pi.ask(self.client, "pulse led 0", "pulse led 60001", "pulse led soon", "pulse led"),
            ["error: pulse: milliseconds must be more than 0, got 0",
             "error: pulse: 60001 ms is longer than this server allows (60 s, --max-ttl)",
             "error: pulse: MS must be a number, got 'soon'",
             "error: usage: pulse NAME MS"],
        )  # fmt: skip

    def test_pwm(self) -> None:
        """PWM where the pins have it: the duty reaches the backend; 0 and 100 are plain levels."""
        self.assertEqual(self.pi.ask(self.client, "pwm led 40", "outputs"),
                         ["led pwm 40%", "led=pwm:40 motor=off gate=on"])  # fmt: skip
        self.assertEqual(self.pi.backend.duty, {12: 40.0})
        self.assertEqual(self.pi.ask(self.client, "pwm led 100"), ["led on"])
        self.assertEqual(self.pi.backend.duty, {})
        self.assertEqual(self.pi.ask(self.client, "pwm led 101", "pwm led x"),
                         ["error: pwm: duty is a percentage from 0 to 100, got 101",
                          "error: pwm: DUTY must be a number, got 'x'"])  # fmt: skip

    def test_pwm_without_backend_support(self) -> None:
        """On pins without PWM, pwm is refused with what to do instead."""
        pi = ControlHarness(pwm=False)
        self.assertEqual(
            pi.ask(pi.connect(), "pwm led 40"),
            ["error: pwm: the sim backend has no PWM; use set led on|off, or serve with --gpio rpi "
             "(software PWM)"],
        )  # fmt: skip
        self.assertFalse(pi.high(LED))

    def test_bad_commands(self) -> None:
        """Each mistake has its own error; the connection stays."""
        protocol, transport = self.client
        self.assertEqual(
            self.pi.ask(self.client, "set lamp on", "set led maybe", "set led", "stop now"),
            ["error: unknown output 'lamp'; outputs are: led, motor, gate",
             "error: set: the level is on or off, got 'maybe'",
             "error: usage: set NAME on|off [ttl=SECONDS] (send 'outputs' for the names)",
             "error: stop takes no arguments"],
        )  # fmt: skip
        self.assertFalse(transport.disconnecting)

    def test_stop(self) -> None:
        """stop puts every output in its safe level and cancels their timers."""
        self.pi.ask(self.client, "set led on", "set motor on", "set gate off")
        self.assertEqual(self.pi.ask(self.client, "stop"), ["stopped: led=off motor=off gate=on"])
        self.assertEqual((self.pi.high(LED), self.pi.high(MOTOR), self.pi.high(GATE)), (False, False, True))
        self.assertEqual(self.pi.timers(), [])

    def test_help_lists_control_for_granted_clients_only(self) -> None:
        (granted,) = self.pi.ask(self.client, "help")
        self.assertIn("set NAME on|off", granted)
        (reader,) = self.pi.ask(self.pi.connect("192.168.1.9"), "help")
        self.assertNotIn("set NAME", reader)
        self.assertIn("outputs", reader)

    def test_no_outputs_no_control_commands(self) -> None:
        """Without --output, the control commands are unknown, as before."""
        clock = Clock()
        backend = SimulatedGPIO(clock=clock)
        reader = InputReader(backend, [DEFAULT_INPUT], FakeRunner(), clock, wall=clock.seconds)
        factory = SensorServerFactory(reader, ListenSettings())
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(transport)
        protocol.dataReceived(b"set led on\0")
        self.assertEqual(replies(transport), [b"error: unknown command 'set'; send 'help' for the list"])


class ShutdownTests(SynchronousTestCase):
    def test_safe_then_input(self) -> None:
        """Shutdown writes each safe level, then returns each pin to input; no command after."""
        pi = ControlHarness()
        client = pi.connect()
        pi.ask(client, "set led on", "set gate off", "set motor on")
        done = pi.controller.shutdown()
        self.successResultOf(done)
        self.assertEqual(pi.backend.released_outputs, {12, 16, 18})
        self.assertEqual(pi.backend.outputs, frozenset())
        self.assertEqual((pi.high(LED), pi.high(MOTOR), pi.high(GATE)), (False, False, True))
        self.assertEqual(pi.timers(), [])
        self.assertEqual(pi.ask(client, "set led on"),
                         ["error: the server is stopping: every output is going to its safe level"])  # fmt: skip


class WriteTests(SynchronousTestCase):
    """Writes through the worker pool: replies once written; a flood coalesces."""

    def setUp(self) -> None:
        self.runner = FakeRunner()
        self.pi = ControlHarness(runner=self.runner)
        self.client = self.pi.connect()

    def test_reply_once_written(self) -> None:
        self.assertEqual(self.pi.ask(self.client, "set led on"), [])
        self.assertFalse(self.pi.high(LED))
        self.runner.run_all()
        self.assertTrue(self.pi.high(LED))
        self.assertEqual(replies(self.client[1]), [b"led on"])

    def test_coalesced(self) -> None:
        """While a write is in flight, only the latest level is written next: one job, not many."""
        self.pi.ask(self.client, "set led on", "set led off", "set led on", "set led off", "set led on")
        self.assertEqual(len(self.runner.jobs), 1)
        self.runner.run_all()
        self.assertEqual(self.runner.jobs, [])  # the latest level (on) is what was written
        self.assertTrue(self.pi.high(LED))
        self.assertEqual(replies(self.client[1]), [b"led on", b"led off", b"led on", b"led off", b"led on"])

    def test_failed_write(self) -> None:
        """A write the driver refuses is an error reply, logged; the next command tries again."""
        self.pi.ask(self.client, "set led on")
        job = self.runner.jobs.pop()
        from rpisensor.hw.interfaces import OutputWriteError

        with capturedLogs() as events:
            job.deferred.errback(OutputWriteError("the line is gone"))
        self.assertEqual(replies(self.client[1]), [b"error: driving led on failed: the line is gone"])
        self.assertTrue(any(e.get("error") == "the line is gone" for e in events))
        self.pi.ask(self.client, "set led on")
        self.runner.run_all()
        self.assertEqual(replies(self.client[1]), [b"led on"])

    def test_listener_hears_written_changes(self) -> None:
        heard = []
        self.pi.controller.add_listener(lambda spec, level, when: heard.append((spec.name, level)))
        self.pi.ask(self.client, "set led on", "set led on")
        self.runner.run_all()
        self.assertEqual(heard, [("led", Level(1.0))])


class ClaimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pi = ControlHarness()
        self.a = self.pi.connect(port=40001)
        self.b = self.pi.connect(port=40002)

    def test_claim_and_release(self) -> None:
        """While A holds the claim, B's commands get an error naming A; stop still works; release ends it."""
        self.assertEqual(self.pi.ask(self.a, "claim"),
                         ["claimed: only this connection may drive the outputs until it sends release or "
                          "disconnects"])  # fmt: skip
        self.assertEqual(self.pi.ask(self.a, "set led on"), ["led on"])
        self.assertEqual(
            self.pi.ask(self.b, "set led off", "claim", "release", "outputs"),
            ["error: the outputs are claimed by 127.0.0.1:40001; wait until it sends release or disconnects",
             "error: claim: the outputs are claimed by 127.0.0.1:40001; wait until it sends release or "
             "disconnects",
             "error: release: this connection holds no claim; 127.0.0.1:40001 does",
             "led=on motor=off gate=on; claimed by 127.0.0.1:40001"],
        )  # fmt: skip
        self.assertTrue(self.pi.high(LED))
        self.assertEqual(self.pi.ask(self.b, "stop"), ["stopped: led=off motor=off gate=on"])
        self.assertEqual(self.pi.ask(self.a, "release"), ["released: any client with the grant may drive the outputs"])
        self.assertEqual(self.pi.ask(self.b, "set led on"), ["led on"])

    def test_disconnect_ends_the_claim(self) -> None:
        self.pi.ask(self.a, "claim")
        self.pi.disconnect(self.a)
        self.assertEqual(self.pi.ask(self.b, "claim", "set led on"), [
            "claimed: only this connection may drive the outputs until it sends release or disconnects",
            "led on",
        ])  # fmt: skip


class RateLimitTests(SynchronousTestCase):
    def test_bucket(self) -> None:
        clock = Clock()
        rate = CommandRate(clock, 2)
        self.assertEqual([rate.allow() for _ in range(3)], [True, True, False])
        clock.advance(0.5)
        self.assertEqual([rate.allow(), rate.allow()], [True, False])

    def test_per_connection(self) -> None:
        """Past --control-rate, commands get an error and are not carried out; others' are not counted."""
        pi = ControlHarness(control_rate=5)
        a, b = pi.connect(port=40001), pi.connect(port=40002)
        with capturedLogs() as events:
            answers = pi.ask(a, *["set led on"] * 5, "set led off")
        self.assertEqual(answers[:5], ["led on"] * 5)
        self.assertEqual(answers[5], "error: set: too many control commands: at most 5 a second "
                                     "(--control-rate); this one was not carried out")  # fmt: skip
        self.assertTrue(pi.high(LED))
        self.assertEqual(pi.ask(b, "set led off"), ["led off"])
        self.assertEqual(pi.ask(a, "outputs"), ["led=off motor=off gate=on"])  # reading is not limited
        pi.clock.advance(0.2)
        self.assertEqual(pi.ask(a, "set led on"), ["led on"])
        self.assertTrue(any("Too many control commands" in e.get("log_format", "") for e in events))


class LoggingTests(SynchronousTestCase):
    def test_every_command_with_who_sent_it(self) -> None:
        """Each control command is logged with its sender; a flood of them is cut to a few lines."""
        pi = ControlHarness(control_rate=1000)
        client = pi.connect("127.0.0.1", 40123)
        with capturedLogs() as events:
            pi.ask(client, "set led on", "pulse gate 10", *["set motor on"] * 50)
        commands = [e for e in events if e.get("log_format", "").startswith("Control command")]
        self.assertEqual([(e["who"], e["command"]) for e in commands[:3]],
                         [("127.0.0.1:40123", "set led on"), ("127.0.0.1:40123", "pulse gate 10"),
                          ("127.0.0.1:40123", "set motor on")])  # fmt: skip
        self.assertLess(len(commands), 10)


    def test_a_flood_does_not_hide_another_sender(self) -> None:
        """
        One client's flood of set commands uses up the shared lines, but another
        client's command is still logged; the summary says who sent what was left out.
        """
        pi = ControlHarness(control_rate=1000)
        flooder, other = pi.connect("127.0.0.1", 40001), pi.connect("127.0.0.2", 40002)
        with capturedLogs() as events:
            pi.ask(flooder, *["set led on"] * 100)
            pi.ask(flooder, "set motor on")  # another output, another verb: still the flooder's
            pi.ask(other, "set led on")
            pi.factory.flush_logs()
        commands = [(e["who"], e["command"]) for e in events if e.get("log_format", "").startswith("Control command")]
        self.assertIn(("127.0.0.2:40002", "set led on"), commands)
        self.assertLess(len(commands), 10)
        [summary] = [e for e in events if "left out of the log" in e.get("log_format", "")]
        self.assertEqual((summary["count"], summary["senders"]), (101 - len(commands) + 1, "95 from 127.0.0.1"))

    def test_a_sender_is_its_address_whatever_its_port(self) -> None:
        """New connections from one address do not buy new lines: the sender is the address."""
        pi = ControlHarness(control_rate=1000)
        with capturedLogs() as events:
            for port in range(40000, 40100):
                pi.ask(pi.connect("127.0.0.1", port), "set led on")
        commands = [e for e in events if e.get("log_format", "").startswith("Control command")]
        self.assertLess(len(commands), 10)


@implementer(ISSLTransport)
class _TLSTransport(StringTransport):
    """A StringTransport that shows a client certificate, as a finished TLS handshake does."""

    def __init__(self, certificate_pem: bytes, peer: str = "192.168.1.20") -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 50000))
        self._certificate = crypto.load_certificate(crypto.FILETYPE_PEM, certificate_pem)

    def getPeerCertificate(self):
        return self._certificate


class GrantTests(SynchronousTestCase):
    """Reading is open to whoever may connect; driving needs an address or certificate grant."""

    REFUSED = (
        "error: set: this client may not drive outputs (it may still read); the server grants "
        "control with --control-allow CIDR or, over mutual TLS, --control-cert CN"
    )

    def test_default_is_loopback_only(self) -> None:
        pi = ControlHarness()
        self.assertEqual(pi.ask(pi.connect("127.0.0.1"), "set led on"), ["led on"])
        self.assertEqual(pi.ask(pi.connect("::1"), "set led off"), ["led off"])
        lan = pi.connect("192.168.1.9")
        with capturedLogs() as events:
            answers = pi.ask(lan, "set led on", "pulse led 10", "stop", "claim", "outputs", "list")
        self.assertEqual(answers, [self.REFUSED, self.REFUSED.replace("set:", "pulse:"),
                                   self.REFUSED.replace("set:", "stop:"), self.REFUSED.replace("set:", "claim:"),
                                   "led=off motor=off gate=on", "button"])  # fmt: skip
        self.assertFalse(lan[1].disconnecting)
        self.assertFalse(pi.high(LED))
        refused = [e for e in events if e.get("log_format", "").startswith("Refused")]
        self.assertEqual(refused[0]["who"], "192.168.1.9:40000")

    def test_unix_socket_client_counts_as_loopback(self) -> None:
        pi = ControlHarness()
        transport = StringTransport(peerAddress=UNIXAddress(None))
        self.assertEqual(pi.ask(pi.connect(transport=transport), "set led on"), ["led on"])

    def test_control_allow(self) -> None:
        """--control-allow replaces the default: 127.0.0.1 is refused unless listed."""
        pi = ControlHarness(grants=ControlGrants([parse_network("192.168.1.0/24")]))
        self.assertEqual(pi.ask(pi.connect("192.168.1.9"), "set led on"), ["led on"])
        self.assertEqual(pi.ask(pi.connect("127.0.0.1"), "set led off"), [self.REFUSED])
        self.assertEqual(pi.ask(pi.connect("192.168.2.9"), "set led off"), [self.REFUSED])
        self.assertTrue(pi.high(LED))

    def test_split_loopback(self) -> None:
        pi = ControlHarness(grants=ControlGrants([parse_network("127.0.0.2")]))
        self.assertEqual(pi.ask(pi.connect("127.0.0.2"), "set led on"), ["led on"])
        self.assertEqual(pi.ask(pi.connect("127.0.0.1"), "set led off"), [self.REFUSED])

    def connect_tls(self, pi: ControlHarness, certificate_pem: bytes):
        transport = _TLSTransport(certificate_pem)
        connection = pi.connect(transport=transport)
        connection[0].handshakeCompleted()
        return connection

    def test_certificate_grant(self) -> None:
        """With --control-cert, the client certificate's CN grants control; another CN does not."""
        pki = make_pki()
        pi = ControlHarness(grants=ControlGrants(None, ["rpisensor test client"]))
        named = self.connect_tls(pi, pki.client.cert_pem)
        with capturedLogs() as events:
            self.assertEqual(pi.ask(named, "set led on"), ["led on"])
        self.assertEqual(events[0]["who"], "192.168.1.20:50000 (certificate rpisensor test client)")
        stranger = self.connect_tls(pi, pki.other_client.cert_pem)
        self.assertEqual(pi.ask(stranger, "set led off"), [self.REFUSED])
        self.assertEqual(pi.ask(pi.connect("127.0.0.1"), "set led off"), [self.REFUSED])  # certificates alone
        self.assertTrue(pi.high(LED))

    def test_certificate_or_address(self) -> None:
        pki = make_pki()
        pi = ControlHarness(grants=ControlGrants([parse_network("127.0.0.1")], ["nobody"]))
        self.assertEqual(pi.ask(pi.connect("127.0.0.1"), "set led on"), ["led on"])
        self.assertEqual(pi.ask(self.connect_tls(pi, pki.client.cert_pem), "set led off"), [self.REFUSED])


class FuzzTests(SynchronousTestCase):
    """Whatever a user or a peer writes, a parse error or one reply: never a crash."""

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=60))
    def test_output_option(self, text: str) -> None:
        try:
            spec = parse_output(text)
        except ValueError:
            return
        self.assertTrue(spec.name.isidentifier())

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(["set", "pulse", "pwm", "stop", "claim", "release", "outputs"]),
           st.lists(st.one_of(
               st.sampled_from(["led", "motor", "gate", "on", "off", "ttl=0.2", "ttl=99", "100", "40%", "-1",
                                "1e308", "nan", "inf", "0"]),
               st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                       min_size=1, max_size=12).filter(lambda w: w.split() == [w])), max_size=4))  # fmt: skip
    def test_commands(self, verb: str, words: list[str]) -> None:
        pi = ControlHarness(control_rate=10_000)
        client = pi.connect()
        answers = pi.ask(client, " ".join([verb, *words]))
        self.assertEqual(len(answers), 1, answers)
        self.assertFalse(client[1].disconnecting)
        pi.controller.shutdown()


class LogKindTests(SynchronousTestCase):
    def test_made_up_names_share_one_kind(self) -> None:
        """Output names a peer invents cannot grow the log's rate-limit table."""
        pi = ControlHarness(control_rate=10_000)
        client = pi.connect()
        pi.ask(client, *[f"set nothing{n} on" for n in range(100)])
        self.assertLessEqual(len(pi.factory.control_log._windows), 2)


class OutputJournalTests(SynchronousTestCase):
    """Output changes in serve's journal: the start-up level first, even when a command beats the journal."""

    def test_a_command_before_the_journal_answers_is_recorded_after_the_start_up_level(self) -> None:
        from rpisensor.roles.serve.control import OutputsService
        from rpisensor.stream.journal import Journal
        from rpisensor.stream.journal_service import JournalService

        harness = ControlHarness(outputs=(LED,))
        journal_runner = FakeRunner()
        journal = JournalService(harness.clock, Journal(None, current_boot="boot"), outbox=False,
                                 runner=journal_runner)  # fmt: skip
        journal.startService()
        service = OutputsService(harness.controller, journal)
        service.startService()
        # The journal has not said what it last recorded yet when a client sets the LED.
        self.assertEqual(harness.ask(harness.connect(), "set led on"), ["led on"])
        for _ in range(5):
            journal_runner.run_all()
            harness.clock.advance(0)
        self.assertEqual(
            [(e.sensor, e.value, e.text) for e in journal.journal.after(0, 10)],
            [("led", 0, "off"), ("led", 1, "on")],
        )
