"""
The code examples of the README and of the documentation in docs/, run
exactly as written (only the address is changed to a free loopback port), so
that what they say stays true.
"""

import re
import subprocess
from contextlib import closing
import sys
import textwrap
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.processes import DEADLINE, Twistd, connect_tcp, free_port, request

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def example(marker: str, page: str) -> str:
    """
    The fenced code block that follows C{<!-- marker -->} on a page.

    @param page: the page's path in the repository, e.g. C{docs/howto/embedding.md}.
    """
    text = (ROOT / page).read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", text, re.DOTALL)
    if match is None:
        raise AssertionError(f"{page} has no example marked {marker}")
    return match.group(1)


class ExampleProcess:
    """Runs a Python snippet in a subprocess, collecting its output in a file."""

    def __init__(self, test, code: str, stdin=None):
        directory = Path(test.mktemp()).resolve()
        directory.mkdir()
        script = directory / "example.py"
        script.write_text(code, encoding="utf-8")
        self.output = directory / "output.txt"
        self._out = open(self.output, "w")
        self.process = subprocess.Popen(
            [sys.executable, str(script)], cwd=directory, stdout=self._out, stderr=subprocess.STDOUT,
            stdin=stdin,
        )
        test.addCleanup(self.close)

    def text(self) -> str:
        return self.output.read_text()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._out.close()


def wait_for(condition, describe):
    import time

    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {describe()}")
        time.sleep(0.05)


class EmbeddingExampleTests(SynchronousTestCase):
    def test_server_example(self):
        """The embedding guide's server answers a tutorial-style 'go' in its own reactor."""
        port = free_port()
        code = example("embedding-server-example", "docs/howto/embedding.md")
        self.assertIn("22000", code)
        running = ExampleProcess(self, code.replace("22000", str(port)))

        def answered():
            if running.process.poll() is not None:
                raise AssertionError(f"example exited:\n{running.text()}")
            try:
                with connect_tcp(port, timeout=2) as sock:
                    self.reply = request(sock, b"go")
                return True
            except OSError:
                return False

        wait_for(answered, running.text)
        self.assertEqual(self.reply, b"Button released\0")

    def test_client_example(self):
        """The embedding guide's reconnecting client prints the server's replies."""
        server = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", "tcp:0:interface=127.0.0.1")
        self.addCleanup(server.close)
        port = server.wait_port()
        code = example("embedding-client-example", "docs/howto/embedding.md")
        self.assertIn("tcp:host=192.168.0.17:port=22000", code)
        running = ExampleProcess(
            self, code.replace("tcp:host=192.168.0.17:port=22000", f"tcp:host=127.0.0.1:port={port}")
        )
        wait_for(lambda: running.text().count("Button released") >= 2, running.text)

    def test_stream_example(self):
        """
        The embedding guide's reporter and collector in one program: readings stored,
        then acknowledged, in order, and the store holds what was printed.
        """
        import sqlite3

        port = free_port()
        code = example("embedding-stream-example", "docs/howto/embedding.md")
        self.assertEqual(code.count("22001"), 2)
        running = ExampleProcess(self, code.replace("22001", str(port)))
        wait_for(lambda: "the Pi's outbox: stored up to #3" in running.text(), running.text)
        lines = running.text().splitlines()
        self.assertEqual(lines[:2], ["stored pi-kitchen #1: button Button released", "the Pi's outbox: stored up to #1"])
        store = running.output.parent / "readings.sqlite"
        with closing(sqlite3.connect(store)) as db:
            seqs = [seq for (seq,) in db.execute("SELECT seq FROM readings WHERE device = 'pi-kitchen' ORDER BY seq")]
        self.assertEqual(seqs[:3], [1, 2, 3])

    def test_testing_example(self):
        """The testing guide's pytest example passes when run with pytest, as a user would."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        (directory / "test_example.py").write_text(example("testing-example", "docs/howto/testing.md"), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(directory),
             str(directory)],
            capture_output=True, text=True, timeout=120, cwd=directory,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("1 passed", result.stdout)


class QuickStartTests(SynchronousTestCase):
    def test_quick_start_commands_are_the_ci_commands(self):
        """The README's test command is the one .ci/run runs."""
        readme = README.read_text(encoding="utf-8")
        commands = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)
        self.assertIn("twistd -n rpisensor", commands[0])
        ci = (README.parent / ".ci" / "run").read_text()
        self.assertIn(textwrap.dedent(commands[1]).strip(), ci)


class TLSRecipeTests(SynchronousTestCase):
    def test_recipe_and_commands(self):
        """The security guide's certificate recipe works, and its serve and query commands talk over mutual TLS."""
        import shlex
        import shutil

        if shutil.which("openssl") is None:
            raise SkipTest("the openssl command is not installed")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        recipe = example("tls-recipe", "docs/howto/security.md").replace("HOST=raspberrypi.local", "HOST=localhost")
        made = subprocess.run(["bash", "-e", "-c", recipe], cwd=directory, capture_output=True, text=True)
        self.assertEqual(made.returncode, 0, made.stderr)
        serve, query, _poll = example("tls-commands", "docs/howto/security.md").strip().splitlines()
        serve_args = shlex.split(serve.replace("ssl:22443:", "ssl:0:interface=127.0.0.1:"))
        self.assertEqual(serve_args[:3], ["twistd", "-n", "rpisensor"])
        server = Twistd(*serve_args[2:], cwd=directory)
        self.addCleanup(server.close)
        port = server.wait_port()
        query_args = shlex.split(query.replace("$HOST", "localhost").replace("22443", str(port)))
        self.assertEqual(query_args[0], "rpisensor")
        rpisensor = str(Path(sys.executable).parent / "rpisensor")
        answered = subprocess.run([rpisensor, *query_args[1:]], cwd=directory, capture_output=True,
                                  text=True, timeout=DEADLINE)  # fmt: skip
        self.assertEqual((answered.returncode, answered.stdout), (0, "Button released\n"), answered.stderr)
        without_certificate = [a for a in query_args[1:] if a.startswith("tls:")][0].split(":certificate=")[0]
        refused = subprocess.run([rpisensor, "query", without_certificate, "go"], cwd=directory,
                                 capture_output=True, text=True, timeout=DEADLINE)  # fmt: skip
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("TLS", refused.stderr)


GPIOZERO_GUIDE = "docs/howto/gpiozero.md"


class GpiozeroExampleTests(SynchronousTestCase):
    def test_the_guides_program_against_the_guides_serve(self):
        """The gpiozero guide's serve command (simulated pins, a loopback port) and its program, run as it says."""
        import os
        import shlex

        port = free_port()
        serve = shlex.split(example("gpiozero-serve", GPIOZERO_GUIDE).strip())
        assert serve[:3] == ["twistd", "-n", "rpisensor"], serve
        # Here the PC is this machine: it gets the grant the guide gives its network.
        twistd = Twistd(*serve[2:], "--gpio", "sim", "--journal", "none", "--control-allow", "127.0.0.0/8",
                        "--listen", f"tcp:{port}:interface=127.0.0.1")  # fmt: skip
        self.addCleanup(twistd.close)
        twistd.wait_port()
        run = shlex.split(example("gpiozero-run", GPIOZERO_GUIDE).strip())
        variables = dict(word.split("=", 1) for word in run if "=" in word and not word.startswith("-"))
        self.assertEqual(variables, {"GPIOZERO_PIN_FACTORY": "rpisensor", "RPISENSOR_HOST": "raspberrypi.local"})
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        (directory / "button_led.py").write_text(example("gpiozero-example", GPIOZERO_GUIDE), encoding="utf-8")
        program = subprocess.Popen(
            [sys.executable, "button_led.py"], cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env={**os.environ, **variables, "RPISENSOR_HOST": "127.0.0.1",
                                            "RPISENSOR_PORT": str(port)},
        )  # fmt: skip
        self.addCleanup(lambda: (program.poll() is None and program.kill(), program.wait()))

        def ask(command: bytes) -> bytes:
            with connect_tcp(port) as sock:
                return request(sock, command)

        # The program makes its LED (set led off), then its button, then sets the callbacks: press
        # until the LED follows (a press before the callbacks are set is not seen, as on a real Pi).
        wait_for(lambda: "set led off" in twistd.log(), twistd.log)
        for _ in range(20):
            ask(b"sim button press")
            if _within(lambda: ask(b"outputs") == b"led=on\0", 2.0):
                break
            ask(b"sim button release")
        else:
            raise AssertionError(f"the LED never followed the button:\n{twistd.log()}")
        ask(b"sim button release")
        wait_for(lambda: ask(b"outputs") == b"led=off\0", twistd.log)
        self.assertIsNone(program.poll())


def _within(condition, seconds: float) -> bool:
    """Whether C{condition} comes true within C{seconds} (a retry's step, not a test's verdict)."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
