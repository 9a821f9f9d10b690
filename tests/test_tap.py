"""Tests for rpisensor.app.tap: option parsing and the service it builds."""

from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from rpisensor.stopping import DrainService
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.net.listening import ListenerService
from rpisensor.sensing.pool import ReadPoolService
from rpisensor.app.tap import Options, makeService


def parse(*args):
    options = Options()
    options.parseOptions(list(args))
    return options


class DefaultsTests(SynchronousTestCase):
    def test_no_arguments_means_serve(self):
        """With no arguments the plugin runs 'serve' with the tutorial's defaults."""
        options = parse()
        self.assertEqual(options.subCommand, "serve")
        serve = options.subOptions
        self.assertEqual(serve["listen"], ["tcp:22000"])
        self.assertEqual(serve["inputs"], [DEFAULT_INPUT])
        self.assertEqual((serve["gpio"], serve["numbering"]), ("auto", "board"))

    def test_serve_options_without_subcommand(self):
        """Options given without 'serve' go to 'serve'."""
        options = parse("--gpio", "sim", "--listen", "tcp:0")
        self.assertEqual(options.subCommand, "serve")
        self.assertEqual(options.subOptions["gpio"], "sim")
        self.assertEqual(options.subOptions["listen"], ["tcp:0"])

    def test_repeatable_listen_and_input(self):
        """--listen and --input may be repeated; the first input answers 'go'."""
        serve = parse("serve", "--listen", "tcp:0", "--listen", "tcp6:0",
                      "--input", "door=18,active=high", "--input", "button=24").subOptions  # fmt: skip
        self.assertEqual(serve["listen"], ["tcp:0", "tcp6:0"])
        self.assertEqual([spec.name for spec in serve["inputs"]], ["door", "button"])
        self.assertFalse(serve["inputs"][0].active_low)

    def test_bcm_numbering_checks_pins(self):
        """Pins are checked in the numbering given, wherever --numbering appears."""
        serve = parse("serve", "--input", "button=2", "--numbering", "bcm").subOptions
        self.assertEqual(serve["inputs"][0].pin, 2)
        self.assertRaises(UsageError, parse, "serve", "--input", "button=2")  # BOARD 2 is 5 V


class BadOptionTests(SynchronousTestCase):
    def assertUsageError(self, args, *fragments):
        error = self.assertRaises(UsageError, parse, *args)
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_power_pin(self):
        """A power pin is refused, naming --input and the pin."""
        self.assertUsageError(["--input", "button=1"], "--input", "BOARD pin 1")

    def test_bad_input_settings(self):
        """Malformed inputs are refused with the part that is wrong."""
        self.assertUsageError(["--input", "button"], "--input", "NAME=PIN")
        self.assertUsageError(["--input", "button=x"], "--input", "must be a number")
        self.assertUsageError(["--input", "button=24,pull=sideways"], "pull must be")
        self.assertUsageError(["--input", "button=24,colour=red"], "unknown setting")

    def test_duplicate_input(self):
        """Two inputs with one name are refused."""
        self.assertUsageError(["--input", "a=24", "--input", "a=26"], "--input", "'a'")

    def test_bad_choices(self):
        """--gpio and --numbering accept only their choices."""
        self.assertUsageError(["--gpio", "bogus"], "--gpio", "auto, gpiod, rpi, sim")
        self.assertUsageError(["--numbering", "wiringpi"], "--numbering")

    def test_bad_numbers(self):
        """Numeric options refuse words and negative numbers, naming the option."""
        self.assertUsageError(["--sim-latency", "slow"], "--sim-latency")
        self.assertUsageError(["--sim-latency", "-1"], "--sim-latency")
        self.assertUsageError(["--read-threads", "0"], "--read-threads")
        self.assertUsageError(["--max-message-bytes", "0"], "--max-message-bytes")

    def test_bad_endpoint(self):
        """An endpoint string that does not parse is refused, naming --listen."""
        self.assertUsageError(["--listen", "nonsense:"], "--listen nonsense:")


class MakeServiceTests(SynchronousTestCase):
    def test_serve_service(self):
        """makeService builds the read pool, the publishing side and one listener per --listen."""
        from rpisensor.roles.serve.publishing import PublishingService
        from rpisensor.stream.state import InputState

        service = makeService(parse("--gpio", "sim", "--listen", "tcp:0", "--listen", "tcp:0")).role
        self.assertIsInstance(service, MultiService)
        children = list(service)
        self.assertIsInstance(children[0], ReadPoolService)
        self.assertIsInstance(children[1], InputState)  # simulated pins tell their changes
        self.assertIsInstance(children[2], PublishingService)  # after the subscribers, before the pool
        self.assertIsInstance(children[3], DrainService)  # stops after the listeners
        self.assertEqual([type(c) for c in children[4:]], [ListenerService, ListenerService])
        self.assertEqual(service.factory.reader.backend.name, "sim")

    def test_sim_options_reach_backend(self):
        """--sim-latency and --sim-fail-every configure the simulated pins."""
        service = makeService(parse("--gpio", "sim", "--sim-latency", "0.25", "--sim-fail-every", "3")).role
        backend = service.factory.reader.backend
        self.assertEqual((backend.latency, backend.fail_every), (0.25, 3))

    def test_twistd_service_exits_cleanly_on_signals(self):
        """Under twistd the role's service sits beside the clean-exit signal handlers."""
        from rpisensor.app.signals import ExitCleanlyOnSignals

        top = makeService(parse("--gpio", "sim"))
        self.assertTrue(any(isinstance(child, ExitCleanlyOnSignals) for child in top))
        self.assertIn(top.role, list(top))

    def test_rpi_unavailable_exits_with_one_line(self):
        """--gpio rpi on a machine without a Pi exits with one line saying why."""
        from rpisensor.hw import GPIOUnavailable
        from rpisensor.hw.rpi import check_available

        try:
            check_available()
        except GPIOUnavailable:
            pass
        else:
            raise SkipTest("this machine can drive real pins, so --gpio rpi works here")
        error = self.assertRaises(SystemExit, makeService, parse("--gpio", "rpi"))
        message = str(error.code)
        self.assertTrue(message.startswith("rpisensor: cannot use GPIO: "))
        self.assertIn("--gpio sim", message)
        self.assertNotIn("\n", message)


class PluginTests(SynchronousTestCase):
    def test_plugin_discovered(self):
        """twistd finds exactly one service maker named rpisensor, pointing at rpisensor.app.tap."""
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "rpisensor"]
        self.assertEqual(len(makers), 1)
        self.assertEqual(makers[0].module, "rpisensor.app.tap")

    def test_plugin_module_is_light(self):
        """Importing the plugin module imports neither the reactor nor rpisensor."""
        import subprocess
        import sys

        code = (
            "import sys, twisted.plugins.rpisensor_plugin; "
            "print(sorted(m for m in sys.modules if m.startswith('rpisensor') "
            "or m in ('twisted.internet.reactor', 'RPi.GPIO')))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "[]")

    def test_parsing_options_loads_no_reactor_and_no_test_helpers(self):
        """
        Checking every endpoint form while the options are parsed (tls: too, which asks for a
        name resolver) neither installs the reactor nor loads Twisted's test doubles (trial).
        """
        import subprocess
        import sys

        code = (
            "import sys, warnings; warnings.simplefilter('error'); "
            "from rpisensor.app.tap import Options; "
            "Options().parseOptions(['serve', '--gpio', 'sim', '--listen', 'tcp:0', '--listen', 'unix:s.sock']); "
            "Options().parseOptions(['report', '--gpio', 'sim', '--connect', 'tls:host=pc.local:port=22001']); "
            "print(sorted(m for m in sys.modules if m in "
            "('twisted.internet.reactor', 'twisted.internet.testing', 'twisted.trial.unittest')))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "[]"), out.stderr)
