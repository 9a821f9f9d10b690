"""
The C{rpisensor query} console script, run as a real process, as a user would:
replies on stdout, one line on stderr when the query fails, and its exit status.

Only loopback addresses are used; nothing asserts a duration.
"""

from __future__ import annotations

import signal
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


#: What a refusing server says before it closes.
REFUSAL = "error: refused: 127.0.0.1 is not in --allow"


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

    def serve_raw(self, handle) -> tuple[int, list[socket.socket]]:
        """
        Listen on loopback; a thread accepts one connection and calls
        C{handle(conn)}. Returns the port and the accepted connections (closed
        at cleanup).
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(DEADLINE)  # the thread ends even if the query never connects
        accepted: list[socket.socket] = []

        def accept() -> None:
            try:
                conn = listener.accept()[0]
            except OSError:
                return
            accepted.append(conn)
            handle(conn)

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        self.addCleanup(acceptor.join, DEADLINE)
        self.addCleanup(lambda: [conn.close() for conn in accepted])
        return listener.getsockname()[1], accepted

    def test_no_answer(self) -> None:
        """A server that accepts and never answers: exit 1 after C{--timeout 1}, saying so."""
        port, accepted = self.serve_raw(lambda conn: None)
        result = run_rpisensor("query", "--timeout", "1", endpoint(port), "go")
        self.assertEqual(len(accepted), 1, "the query never connected")
        self.assertFailsWithOneLine(result, "no answer within 1 s")

    def refusing_server(self) -> int:
        def refuse(conn: socket.socket) -> None:
            conn.sendall(REFUSAL.encode() + b"\0")
            conn.close()

        return self.serve_raw(refuse)[0]

    def test_refused_says_what_the_server_said(self) -> None:
        """
        A server that says C{error: ...} and closes before the replies: exit 1, and the one stderr
        line is what it said, not "closed the connection before replying".
        """
        result = run_rpisensor("query", endpoint(self.refusing_server()), "go", "ping")
        self.assertFailsWithOneLine(result, REFUSAL)
        self.assertIn("closed the connection", result.stderr)

    def test_replies_that_came_are_printed(self) -> None:
        """A query that fails half-way prints the replies that came, then the one stderr line."""

        def answer_then_end(conn: socket.socket) -> None:
            conn.settimeout(DEADLINE)
            data = b""
            while data.count(b"\0") < 2:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(b"pong\0error: busy: shutting down\0")
            conn.close()

        port = self.serve_raw(answer_then_end)[0]
        result = run_rpisensor("query", endpoint(port), "ping", "go", "go")
        self.assertEqual((result.returncode, result.stdout), (1, "pong\n"), result)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("error: busy: shutting down", result.stderr)

    def test_refused_single_message(self) -> None:
        """With one message the server's line comes where its reply would: printed, exit 1."""
        result = run_rpisensor("query", endpoint(self.refusing_server()), "go")
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(REFUSAL, result.stdout + result.stderr)

    def test_error_reply(self) -> None:
        """An unknown command's C{error: ...} reply goes to stdout, and the exit status is 1."""
        port = self.start_serve()
        result = run_rpisensor("query", endpoint(port), "bogus")
        self.assertEqual(result.returncode, 1, result)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 1, result.stdout)
        self.assertTrue(lines[0].startswith("error: "), lines)
        self.assertIn("bogus", lines[0])

    def test_host_port_and_options_after_the_messages(self) -> None:
        """
        C{HOST:PORT} is taken as C{tcp:host=HOST:port=PORT}, and C{-t 2} after the messages is an
        option, not two more messages (which would get two more replies).
        """
        port = self.start_serve()
        result = run_rpisensor("query", f"127.0.0.1:{port}", "go", "-t", "2")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "Button released\n", ""))
        result = run_rpisensor("query", f"127.0.0.1:{port}", "--", "ping", "-t")
        self.assertEqual(result.returncode, 1, result)  # '-t' sent as a message after '--': an error reply
        self.assertEqual(result.stdout.splitlines()[0], "pong")
        self.assertIn("-t", result.stdout.splitlines()[1])

    def assertUsageError(self, *args: str, text: str) -> None:
        result = run_rpisensor("query", *args)
        self.assertEqual((result.returncode, result.stdout), (2, ""), result)
        self.assertIn(text, result.stderr)

    def test_blank_message(self) -> None:
        """A blank MESSAGE is a usage error: the server would not answer it."""
        self.assertUsageError(endpoint(1), "go", " ", text="cannot be blank")

    def test_endpoint_typo(self) -> None:
        """A bare port is a usage error suggesting the right form."""
        self.assertUsageError("22000", "go", text="did you mean tcp:host=HOST:port=22000")

    def test_unchecked_ssl(self) -> None:
        """An ssl: endpoint that checks nothing is refused, pointing at tls:."""
        self.assertUsageError("ssl:host=127.0.0.1:port=1", "go", text="tls:host=HOST:port=PORT")

    def test_no_arguments(self) -> None:
        """C{rpisensor} alone is a usage error: exit 2, with a message on stderr."""
        result = run_rpisensor()
        self.assertEqual(result.returncode, 2, result)
        self.assertEqual(result.stdout, "")
        self.assertIn("rpisensor: ", result.stderr)

    def test_usage_error_is_short(self) -> None:
        """A usage error is the error and where the help is, not the whole help."""
        result = run_rpisensor("query", "127.0.0.1:22000")
        self.assertEqual(result.returncode, 2, result)
        self.assertEqual(result.stderr.splitlines(), [
            "rpisensor query: give at least one MESSAGE to send, e.g. go",
            "'rpisensor query --help' says more.",
        ])  # fmt: skip

    def test_ctrl_c_while_waiting(self) -> None:
        """Ctrl-C while no reply came: 'interrupted', exit 130, not a closed connection."""
        connected = threading.Event()
        port, accepted = self.serve_raw(lambda conn: (conn.recv(100), connected.set()))
        query = subprocess.Popen(rpisensor_command("query", endpoint(port), "go"), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.addCleanup(lambda: query.poll() is None and query.kill())
        self.assertTrue(connected.wait(DEADLINE), "the query never sent its message")
        query.send_signal(signal.SIGINT)
        out, err = query.communicate(timeout=DEADLINE)
        self.assertEqual((query.returncode, out, err),
                         (130, "", "rpisensor query: interrupted, 0 of 1 replies came\n"))  # fmt: skip

    def test_a_reply_too_long_says_so(self) -> None:
        """A reply over the client's limit: said as such, not as the server closing the connection."""
        port, _ = self.serve_raw(lambda conn: (conn.recv(100), conn.sendall(b"9" * 20000 + b"\0")))
        result = run_rpisensor("query", endpoint(port), "read big")
        self.assertFailsWithOneLine(result, "the server's reply reached 20000 bytes, over the 16384 this "
                                            "client takes in one message; the connection was closed")  # fmt: skip

    def test_a_port_out_of_range(self) -> None:
        self.assertUsageError("127.0.0.1:99999", "go", text="endpoint 127.0.0.1:99999: port 99999 is out of range: "
                                                            "a TCP port is 1 to 65535")  # fmt: skip

    def test_version(self) -> None:
        from rpisensor import __version__

        result = run_rpisensor("--version")
        self.assertEqual(result.returncode, 0, result)
        self.assertTrue(result.stdout.startswith(f"rpisensor {__version__} (Twisted "), result.stdout)
