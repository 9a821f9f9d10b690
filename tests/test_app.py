"""
The application around the roles: the command line (help, usage errors,
version, a pid file per role), signals, and pressing simulated inputs from
outside the process (the C{sim} command and demo patterns).
"""

from __future__ import annotations

import os
import re
import signal

from twisted.internet.error import ReactorNotRunning
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.internet.testing import EventLoggingObserver
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rpisensor import __version__
from rpisensor.app.signals import ExitCleanlyOnSignals, stop_quietly_while_starting
from rpisensor.app.tap import Options
from rpisensor.sensing.patterns import Pattern, PatternService, parse_pattern
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.testing import simulated_pins
from tests.processes import Twistd, connect_tcp, request, run_twistd, wait_until
from tests.support import LOOPBACK, ServerHarness, replies


class _StoppingReactor:
    """As much of a reactor as the signal handlers use; stopping twice raises, as the real one does."""

    def __init__(self) -> None:
        self.running = True
        self.stops = 0

    def stop(self) -> None:
        if self.stops:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        self.stops += 1


class _StartingReactor(_StoppingReactor):
    """Not running yet: calls from a signal handler and for when it runs wait for L{run}."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self._calls: list = []

    def callFromThread(self, f, *args) -> None:
        self._calls.append((f, args))

    callWhenRunning = callFromThread

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: None)  # as the real one installs its own
        self.running = True
        while self._calls:
            f, args = self._calls.pop(0)
            f(*args)


class SignalTests(SynchronousTestCase):
    def test_second_signal_while_stopping(self) -> None:
        """A second SIGTERM during the stop says it is already stopping, and raises nothing."""
        reactor = _StoppingReactor()
        handlers = ExitCleanlyOnSignals(reactor)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handlers._stop_once("SIGTERM")
        handlers._stop_once("SIGTERM")
        self.assertEqual(reactor.stops, 1)
        self.assertIn("already stopping", events[-1]["log_format"])

    def test_signal_while_stopping_for_another_reason(self) -> None:
        """A signal while the reactor stops for another reason raises nothing."""
        reactor = _StoppingReactor()
        reactor.stops = 1
        ExitCleanlyOnSignals(reactor)._stop_once("SIGINT")

    def test_sigterm_while_the_role_starts_stops_it_once_running(self) -> None:
        """
        A SIGTERM before the reactor runs (the role's services starting) is
        kept for the reactor, which stops once it runs: no death by the signal.
        """
        self.addCleanup(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM))
        elsewhere = []  # (were the handler not replaced: rather than end the tests' process)
        signal.signal(signal.SIGTERM, lambda *_: elsewhere.append("SIGTERM"))
        reactor = _StartingReactor()
        ExitCleanlyOnSignals(reactor).startService()
        os.kill(os.getpid(), signal.SIGTERM)
        self.assertEqual((reactor.stops, elsewhere), (0, []))
        reactor.run()
        self.assertEqual((reactor.stops, elsewhere), (1, []))
        # Once running, both signals have the clean handler (the reactor's own replaced it meanwhile).
        for number in (signal.SIGTERM, signal.SIGINT):
            self.assertEqual(getattr(signal.getsignal(number), "__func__", None), ExitCleanlyOnSignals._stop)

    def test_the_handlers_start_before_the_role(self) -> None:
        """Under twistd the handlers are the first service to start: a role's start-up is covered."""
        from rpisensor.app.tap import makeService

        self.addCleanup(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM))
        self.addCleanup(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
        options = Options()
        options.parseOptions(["serve", "--gpio", "sim", "--listen", "tcp:0"])
        top = makeService(options)
        self.assertIsInstance(list(top)[0], ExitCleanlyOnSignals)
        self.assertEqual(list(top).index(top.role), 1)


class StartingTests(SynchronousTestCase):
    def test_ctrl_c_while_starting_is_one_line(self) -> None:
        """Between reading the options and the reactor's own handlers, Ctrl-C ends with one line and 130."""
        previous = signal.getsignal(signal.SIGINT)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stop_quietly_while_starting()
        with self.assertRaises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGINT)
        self.assertEqual(stopped.exception.code, 130)

    def test_a_handler_of_someone_elses_is_kept(self) -> None:
        previous = signal.getsignal(signal.SIGINT)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        theirs = lambda *_: None  # noqa: E731
        signal.signal(signal.SIGINT, theirs)
        stop_quietly_while_starting()
        self.assertIs(signal.getsignal(signal.SIGINT), theirs)


class UsageTests(SynchronousTestCase):
    def test_usage_error_is_short(self) -> None:
        """A usage error prints the error and where the help is, not the whole help."""
        exited = run_twistd("rpisensor", "serve", "--max-pending", "lots")
        self.assertNotEqual(exited.code, 0)
        lines = exited.log.strip().splitlines()
        self.assertLessEqual(len(lines), 4, exited.log)
        self.assertIn("--max-pending must be a whole number", exited.log)
        self.assertIn("'twistd rpisensor serve --help' lists every option", exited.log)
        self.assertEqual(exited.log.count("Usage:"), 1, exited.log)
        self.assertEqual(lines[0], "Usage: twistd [twistd options] rpisensor serve [options]")

    def test_usage_error_without_role(self) -> None:
        """Without a role, the pointer is to the general help."""
        exited = run_twistd("rpisensor", "--no-such-option")
        self.assertLessEqual(len(exited.log.strip().splitlines()), 4, exited.log)
        self.assertIn("--help", exited.log)
        self.assertEqual(exited.log.count("Usage:"), 1, exited.log)

    def test_help_labels_each_role(self) -> None:
        """C{--help} without a role shows each role's options under the role's name."""
        usage_text = str(Options())
        for role in ("serve", "poll", "report", "collect"):
            self.assertEqual(len(re.findall(rf"^== {role}: ", usage_text, re.MULTILINE)), 1, role)

    def test_role_help_is_only_that_role(self) -> None:
        """C{serve --help} shows serve's options, not the other roles' blocks."""
        exited = run_twistd("rpisensor", "serve", "--help")
        self.assertEqual(exited.code, 0)
        self.assertIn("--listen", exited.log)
        self.assertNotIn("== poll", exited.log)

    def test_version(self) -> None:
        """C{twistd rpisensor --version} names rpisensor's version, then Twisted's."""
        exited = run_twistd("rpisensor", "--version")
        self.assertEqual(exited.code, 0, exited.log)
        self.assertRegex(exited.log, rf"^rpisensor {re.escape(__version__)} \(Twisted \d")


class PidfileTests(SynchronousTestCase):
    def parse(self, *args: str, pidfile: str = "twistd.pid") -> dict:
        """Parse our options under a stand-in for twistd's own, as twistd nests them."""
        twistd = {"pidfile": pidfile}
        options = Options()
        options.parent = twistd
        options.parseOptions(list(args))
        return twistd

    def test_pidfile_per_role(self) -> None:
        """twistd's default pid file becomes one per role."""
        self.assertEqual(self.parse("collect")["pidfile"], "rpisensor-collect.pid")
        self.assertEqual(self.parse("--gpio", "sim")["pidfile"], "rpisensor-serve.pid")

    def test_explicit_pidfile_kept(self) -> None:
        """A --pidfile the user gave (or none) is kept."""
        self.assertEqual(self.parse("collect", pidfile="mine.pid")["pidfile"], "mine.pid")
        self.assertEqual(self.parse("collect", pidfile="")["pidfile"], "")

    def test_two_roles_side_by_side(self) -> None:
        """serve and collect run at once in one directory, with twistd's default pid file option."""
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, foreground=("-n",))
        self.addCleanup(serve.close)
        collect = Twistd(
            "rpisensor", "collect", "--listen", LOOPBACK, cwd=serve.directory, foreground=("-n",)
        )
        self.addCleanup(collect.close)
        serve_port, collect_port = serve.wait_port(), collect.wait_port()
        self.assertNotEqual(serve_port, collect_port)
        pidfiles = sorted(f for f in os.listdir(serve.directory) if f.endswith(".pid"))
        self.assertEqual(pidfiles, ["rpisensor-collect.pid", "rpisensor-serve.pid"])
        collect.stop_cleanly()
        serve.stop_cleanly()
        self.assertEqual([f for f in os.listdir(serve.directory) if f.endswith(".pid")], [])


class LogTests(SynchronousTestCase):
    def parse(self, *args: str, **twistd: object) -> dict:
        options = Options()
        options.parent = {"pidfile": "twistd.pid", "logfile": None, "logger": None, "nodaemon": False, **twistd}
        options.parseOptions(list(args))
        return options.parent

    def test_a_log_file_per_role_as_a_daemon(self) -> None:
        """Two roles daemonized in one directory write their own log files; given ones are kept."""
        self.assertEqual(self.parse("collect")["logfile"], "rpisensor-collect.log")
        self.assertEqual(self.parse("--gpio", "sim")["logfile"], "rpisensor-serve.log")
        self.assertEqual(self.parse("collect", logfile="mine.log")["logfile"], "mine.log")
        self.assertIsNone(self.parse("collect", nodaemon=True)["logfile"])  # -n: stdout
        self.assertEqual(self.parse("collect")["logger"], "rpisensor.app.logs.observer")
        self.assertEqual(self.parse("collect", logger="my.observer")["logger"], "my.observer")

    def test_two_daemons_in_one_directory(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        for role, port in (("serve", "--listen"), ("collect", "--listen")):
            exited = run_twistd("rpisensor", role, *(["--gpio", "sim", "--journal", "none"] if role == "serve" else []),
                                port, LOOPBACK, cwd=directory)  # fmt: skip
            self.assertEqual(exited.code, 0, exited.log)
        try:
            for role in ("serve", "collect"):
                wait_until(lambda: "Listening on" in _read(directory, f"rpisensor-{role}.log"))
            self.assertNotIn("twistd.log", os.listdir(directory))
            self.assertIn("rpisensor serve starting", _read(directory, "rpisensor-serve.log"))
            self.assertIn("rpisensor collect starting", _read(directory, "rpisensor-collect.log"))
        finally:
            # (The processes' ends, not their pid files: a SIGTERM before the reactor runs ends a
            # daemon at once, by the default action, which leaves its pid file behind.)
            pids = []
            for role in ("serve", "collect"):
                with open(os.path.join(directory, f"rpisensor-{role}.pid")) as f:
                    pids.append(int(f.read()))
                os.kill(pids[-1], signal.SIGTERM)
            for pid in pids:
                wait_until(lambda: not _alive(pid))

    def test_no_debug_lines_unless_asked(self) -> None:
        """A peer's unknown command is a debug line: not in the default log; with RPISENSOR_DEBUG it is."""
        for env, shown in (({}, False), ({"RPISENSOR_DEBUG": "1"}, True)):
            serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", LOOPBACK,
                           env={"RPISENSOR_DEBUG": ""} | env)  # fmt: skip
            self.addCleanup(serve.close)
            with connect_tcp(serve.wait_port()) as sock:
                self.assertTrue(request(sock, b"bogus").startswith(b"error: unknown command"))
                self.assertEqual(request(sock, b"ping"), b"pong\0")
            log = serve.stop_cleanly()
            self.assertEqual("#debug]" in log, shown, log)
            self.assertEqual("Unknown command 'bogus'" in log, shown, log)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read(directory: str, name: str) -> str:
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class SimCommandTests(SynchronousTestCase):
    def send(self, harness, protocol, transport, text: str) -> list[bytes]:
        protocol.dataReceived(text.encode() + b"\0")
        harness.finish_reads()
        return replies(transport)

    def test_press_then_go(self) -> None:
        """From loopback, C{sim button press} presses the simulated button: C{go} then says so."""
        harness = ServerHarness()
        protocol, transport = harness.connect(peer="127.0.0.1")
        self.assertEqual(self.send(harness, protocol, transport, "sim button press"), [b"Button pressed"])
        self.assertEqual(self.send(harness, protocol, transport, "go"), [b"Button pressed"])
        self.assertEqual(self.send(harness, protocol, transport, "sim button release"), [b"Button released"])
        self.assertEqual(self.send(harness, protocol, transport, "go"), [b"Button released"])

    def test_toggle_and_active_high(self) -> None:
        """C{toggle} flips the input; an active-high input is pressed by driving it high."""
        harness = ServerHarness()
        protocol, transport = harness.connect(peer="127.0.0.1")
        self.assertEqual(self.send(harness, protocol, transport, "sim door toggle"), [b"open"])
        self.assertTrue(harness.backend.level(18))
        self.assertEqual(self.send(harness, protocol, transport, "SIM door TOGGLE"), [b"closed"])
        self.assertFalse(harness.backend.level(18))

    def test_refused_from_the_network(self) -> None:
        """From another machine, C{sim} is refused and the pin is untouched; the connection stays."""
        harness = ServerHarness()
        protocol, transport = harness.connect(peer="192.168.0.20")
        (reply,) = self.send(harness, protocol, transport, "sim button press")
        self.assertTrue(reply.startswith(b"error: sim is only for simulated pins"), reply)
        self.assertTrue(harness.backend.level(24))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.send(harness, protocol, transport, "help"),
                         [b'commands: go | read NAME | list | ping | help | subscribe [{"after":N}] | status'])  # fmt: skip

    def test_refused_on_real_pins(self) -> None:
        """With a backend that is not simulated, C{sim} is refused even from loopback."""
        harness = ServerHarness()
        harness.backend.name = "rpi"  # what the permission check looks at
        protocol, transport = harness.connect(peer="127.0.0.1")
        (reply,) = self.send(harness, protocol, transport, "sim button press")
        self.assertTrue(reply.startswith(b"error: "), reply)
        self.assertTrue(harness.backend.level(24))

    def test_bad_arguments(self) -> None:
        """Wrong words get a specific error each."""
        harness = ServerHarness()
        protocol, transport = harness.connect(peer="127.0.0.1")
        self.assertEqual(self.send(harness, protocol, transport, "sim button"),
                         [b"error: usage: sim NAME press|release|toggle"])  # fmt: skip
        self.assertEqual(self.send(harness, protocol, transport, "sim button squeeze"),
                         [b"error: sim takes press, release or toggle, got 'squeeze'"])  # fmt: skip
        (reply,) = self.send(harness, protocol, transport, "sim window press")
        self.assertEqual(reply, b"error: no input named 'window'; inputs are: button, door")

    def test_help_lists_sim_where_allowed(self) -> None:
        """The help a loopback client of simulated pins gets names C{sim}."""
        harness = ServerHarness()
        protocol, transport = harness.connect(peer="127.0.0.1")
        (reply,) = self.send(harness, protocol, transport, "help")
        self.assertTrue(reply.endswith(b"| sim NAME press|release|toggle"), reply)


class PatternTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """NAME=ACTIVE,INACTIVE, in seconds."""
        self.assertEqual(parse_pattern("button=0.5,2"), Pattern("button", 0.5, 2.0))

    def test_parse_errors(self) -> None:
        """Each malformed pattern is refused with what is wrong."""
        for text, wanted in [
            ("button", "expected NAME=ACTIVE_SECONDS,INACTIVE_SECONDS"),
            ("button=1", "expected NAME=ACTIVE_SECONDS,INACTIVE_SECONDS"),
            ("button=a,b", "must be numbers"),
            ("button=0,1", "more than 0"),
        ]:
            with self.subTest(text=text):
                self.assertIn(wanted, str(self.assertRaises(ValueError, parse_pattern, text)))

    def test_plays_on_the_clock(self) -> None:
        """The input is pressed at start, released after ACTIVE s, pressed again after INACTIVE s."""
        clock = Clock()
        pins = simulated_pins(clock=clock)
        pins.setup_input(24, "up")
        service = PatternService(clock, pins, {"button": DEFAULT_INPUT}, [Pattern("button", 0.5, 2.0)])
        service.startService()
        self.assertFalse(pins.level(24))  # pressed: pulled low
        clock.advance(0.5)
        self.assertTrue(pins.level(24))
        clock.advance(1.9)
        self.assertTrue(pins.level(24))
        clock.advance(0.1)
        self.assertFalse(pins.level(24))
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_option_checks_the_input(self) -> None:
        """--sim-pattern for an input that does not exist is a usage error."""
        options = Options()
        error = self.assertRaises(
            usage.UsageError, options.parseOptions, ["serve", "--gpio", "sim", "--sim-pattern", "door=1,1"]
        )
        self.assertIn("no input named 'door'", str(error))


class SimEndToEndTests(SynchronousTestCase):
    def test_press_from_another_terminal(self) -> None:
        """
        The README's demo: with C{--gpio sim}, C{sim button press} from this machine
        changes what every client's C{go} gets.
        """
        twistd = Twistd("rpisensor", "--gpio", "sim", "--listen", LOOPBACK)
        self.addCleanup(twistd.close)
        port = twistd.wait_port()
        with connect_tcp(port) as watcher, connect_tcp(port) as presser:
            self.assertEqual(request(watcher, b"go"), b"Button released\0")
            self.assertEqual(request(presser, b"sim button press"), b"Button pressed\0")
            self.assertEqual(request(watcher, b"go"), b"Button pressed\0")
        twistd.stop_cleanly()

    def test_press_then_go_in_one_query(self) -> None:
        """
        The quick start's second query: a C{go} sent right behind C{sim button press},
        in the same segment, sees the press (the pin's edge reaches the reactor later).
        """
        from tests.test_query import run_rpisensor

        twistd = Twistd("rpisensor", "--gpio", "sim", "--listen", LOOPBACK)
        self.addCleanup(twistd.close)
        port = twistd.wait_port()
        for _ in range(5):
            result = run_rpisensor("query", f"127.0.0.1:{port}", "sim button press", "go", "sim button release", "go")
            self.assertEqual(
                result.stdout.splitlines(),
                ["Button pressed", "Button pressed", "Button released", "Button released"],
                result.stderr,
            )
        twistd.stop_cleanly()

    def test_second_sigterm_while_draining(self) -> None:
        """A second SIGTERM while a reply is still being read is logged, not a traceback; exit 0."""
        twistd = Twistd(
            "rpisensor", "--gpio", "sim", "--listen", LOOPBACK, "--sim-latency", "1000",
            "--read-timeout", "8",
        )  # fmt: skip
        self.addCleanup(twistd.close)
        port = twistd.wait_port()
        with connect_tcp(port) as client:
            client.sendall(b"go\0")
            twistd.wait_for("Client connected from")
            twistd.process.send_signal(15)
            twistd.wait_for("Received SIGTERM: finishing work in flight")
            twistd.process.send_signal(15)
            twistd.wait_for("Received SIGTERM again: already stopping")
            log = twistd.stop_cleanly()
        self.assertNotIn("ReactorNotRunning", log)


class TacTests(SynchronousTestCase):
    def test_bad_environment_value(self) -> None:
        """A bad value from the environment stops a tac file with one line naming it, no traceback."""
        tac = os.path.join(os.path.dirname(__file__), os.pardir, "tac", "report.tac")
        exited = run_twistd("-n", "--pidfile=", "-y", os.path.abspath(tac), env={"RPISENSOR_INTERVAL": "abc"})
        self.assertEqual(exited.code, 1, exited.log)
        self.assertNotIn("Traceback", exited.log)
        self.assertIn("rpisensor: --interval must be a number of seconds, got 'abc'", exited.log)
        self.assertIn("RPISENSOR_", exited.log)


class ReportPatternTests(SynchronousTestCase):
    def test_report_takes_a_sim_pattern(self) -> None:
        """report --gpio sim --sim-pattern plays the pattern on its own pins (a demo without a Pi)."""
        from rpisensor.app.tap import makeService

        options = Options()
        options.parseOptions(["report", "--connect", "127.0.0.1:1", "--gpio", "sim", "--outbox", "none",
                              "--status-listen", "none", "--sim-pattern", "button=0.5,2"])  # fmt: skip
        role = makeService(options).role
        self.assertTrue(any(isinstance(child, PatternService) for child in role))
