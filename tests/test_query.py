"""
The C{rpisensor query} console script, run as a real process, as a user would:
replies on stdout, one line on stderr when the query fails, and its exit status.

Only loopback addresses are used; nothing asserts a duration.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import DEADLINE, Twistd
from tests.support import LOOPBACK



def rpisensor_command(*args: str) -> list[str]:
    """The argv running the C{rpisensor} script installed beside C{sys.executable}."""
    script = Path(sys.executable).parent / "rpisensor"
    if script.is_file():
        return [sys.executable, str(script), *args]
    return [sys.executable, "-c", "from rpisensor.app.cli import main; main()", *args]


def run_rpisensor(*args: str) -> subprocess.CompletedProcess:
    """Run C{rpisensor ARGS} to its end; its stdout and stderr are text."""
    return subprocess.run(
        rpisensor_command(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def endpoint(port: int) -> str:
    return f"tcp:host=127.0.0.1:port={port}"


class QueryTests(SynchronousTestCase):
    """C{rpisensor query ENDPOINT MESSAGE...}."""

    def start_serve(self) -> int:
        """Start C{twistd rpisensor serve --gpio sim} on loopback; return its port."""
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK)
        self.addCleanup(serve.close)

        def stop():
            exited = serve.stop()
            self.assertEqual(exited.code, 0, exited.log)

        self.addCleanup(stop)
        return serve.wait_port(LOOPBACK)

    def assertFailsWithOneLine(self, result: subprocess.CompletedProcess, text: str) -> None:
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stdout, "", result)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(text, lines[0])

    def test_replies_on_stdout(self) -> None:
        """C{go ping} prints C{Button released} and C{pong}, one a line, and exits 0."""
        port = self.start_serve()
        result = run_rpisensor("query", endpoint(port), "go", "ping")
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, "Button released\npong\n", ""),
        )

    def test_connection_refused(self) -> None:
        """A port nobody listens on: exit 1, one stderr line saying the connection was refused."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        result = run_rpisensor("query", endpoint(port), "go")
        self.assertFailsWithOneLine(result, "connection refused")

    def test_no_answer(self) -> None:
        """A server that accepts and never answers: exit 1 after C{--timeout 1}, saying so."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(DEADLINE)  # the thread ends even if the query never connects
        accepted: list[socket.socket] = []

        def accept_and_never_read() -> None:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

        acceptor = threading.Thread(target=accept_and_never_read, daemon=True)
        acceptor.start()
        result = run_rpisensor("query", "--timeout", "1", endpoint(listener.getsockname()[1]), "go")
        acceptor.join(DEADLINE)
        for conn in accepted:
            conn.close()
        self.assertEqual(len(accepted), 1, "the query never connected")
        self.assertFailsWithOneLine(result, "no answer within 1 s")

    def test_error_reply(self) -> None:
        """An unknown command's C{error: ...} reply goes to stdout, and the exit status is 1."""
        port = self.start_serve()
        result = run_rpisensor("query", endpoint(port), "bogus")
        self.assertEqual(result.returncode, 1, result)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 1, result.stdout)
        self.assertTrue(lines[0].startswith("error: "), lines)
        self.assertIn("bogus", lines[0])

    def test_no_arguments(self) -> None:
        """C{rpisensor} alone is a usage error: exit 2, with a message on stderr."""
        result = run_rpisensor()
        self.assertEqual(result.returncode, 2, result)
        self.assertEqual(result.stdout, "")
        self.assertIn("rpisensor: ", result.stderr)
