"""
Remote control end to end: C{twistd -n rpisensor serve --gpio sim --output
...} as a real process; raw socket clients from 127.0.0.1 and 127.0.0.2 (a
grant for one, not the other); C{rpisensor query} and C{rpisensor console}
as real processes. Every wait is for a condition, never a fixed time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import DEADLINE, Twistd, connect_tcp, request, wait_until
from tests.support import LOOPBACK
from tests.test_tls import _TLSTestMixin, rpisensor_command, run_query, tls_client

REFUSED = (
    b"error: set: this client may not drive outputs (it may still read); the server grants "
    b"control with --control-allow CIDR or, over mutual TLS, --control-cert CN\0"
)


def connect_from(source: str, port: int) -> socket.socket:
    """A connection to the server on 127.0.0.1 from the loopback address C{source}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(DEADLINE)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


class ConsoleProcess:
    """C{rpisensor console} with its input a pipe; every line it prints is collected by a thread."""

    def __init__(self, port: int) -> None:
        self.process = subprocess.Popen(
            rpisensor_command("console", f"tcp:127.0.0.1:{port}"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def type(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait_for_line(self, line: str) -> None:
        wait_until(lambda: line in self.lines, describe=lambda: "\n".join(self.lines))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(DEADLINE)
        self.process.stdin.close()
        self._reader.join(DEADLINE)
        self.process.stdout.close()


class RemoteControlTests(SynchronousTestCase):
    def serve(self, *options: str) -> tuple[Twistd, int]:
        twistd = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, "--journal", "none",
                        "--output", "led=12", "--output", "motor=16,ttl=5", *options)  # fmt: skip
        self.addCleanup(twistd.close)
        return twistd, twistd.wait_port()

    def console(self, port: int) -> ConsoleProcess:
        console = ConsoleProcess(port)
        self.addCleanup(console.close)
        return console

    def outputs(self, port: int) -> bytes:
        with connect_tcp(port) as sock:
            return request(sock, b"outputs")

    def test_client_without_the_grant_is_refused(self) -> None:
        """--control-allow 127.0.0.2: 127.0.0.1 gets an error per command, keeps its connection and may read."""
        twistd, port = self.serve("--control-allow", "127.0.0.2")
        with connect_from("127.0.0.1", port) as stranger:
            self.assertEqual(request(stranger, b"set led on"), REFUSED)
            self.assertEqual(request(stranger, b"set led on"), REFUSED)
            self.assertEqual(request(stranger, b"outputs"), b"led=off motor=off\0")
            self.assertEqual(request(stranger, b"go"), b"Button released\0")
        with connect_from("127.0.0.2", port) as granted:
            self.assertEqual(request(granted, b"set led on"), b"led on\0")
            self.assertEqual(request(granted, b"outputs"), b"led=on motor=off\0")
        result = run_query(f"tcp:127.0.0.1:{port}", "set led off")
        self.assertEqual(result.returncode, 1)
        self.assertIn("this client may not drive outputs", result.stdout)
        log = twistd.stop_cleanly()
        self.assertRegex(log, r"Refused set from 127\.0\.0\.1:\d+: it has no control grant")
        self.assertRegex(log, r"Control command from 127\.0\.0\.2:\d+: set led on")

    def test_query_sets_a_latch(self) -> None:
        """rpisensor query pi "set led on" from a script: the latch stays on after the query ends."""
        twistd, port = self.serve()
        result = run_query(f"tcp:127.0.0.1:{port}", "set led on")
        self.assertEqual((result.returncode, result.stdout), (0, "led on\n"), result.stderr)
        self.assertEqual(self.outputs(port), b"led=on motor=off\0")
        twistd.stop_cleanly()

    def test_console_drives_and_sees_the_change_pushed(self) -> None:
        """The console's set gets its reply, and the change comes back pushed, as does another client's."""
        twistd, port = self.serve("--journal", "journal.sqlite")
        console = self.console(port)
        console.wait_for_line("* led: off (state when subscribed)")
        console.type("set led on")
        console.wait_for_line("led on")
        console.wait_for_line("* led: on")
        self.assertEqual(self.outputs(port), b"led=on motor=off\0")
        with connect_tcp(port) as other:
            self.assertEqual(request(other, b"pwm led 25"), b"led pwm 25%\0")
        console.wait_for_line("* led: pwm 25%")
        console.type("quit")
        self.assertEqual(console.process.wait(DEADLINE), 0, "\n".join(console.lines))
        twistd.stop_cleanly()

    def test_killing_the_controlling_client_makes_the_deadman_safe(self) -> None:
        """The console keeps the motor on with repeat; SIGKILL it and the motor goes off at once, not after its ttl."""
        twistd, port = self.serve()
        console = self.console(port)
        console.type("repeat 0.1 set motor on")
        console.wait_for_line("motor on")
        wait_until(lambda: self.outputs(port) == b"led=off motor=on\0")
        console.process.send_signal(signal.SIGKILL)
        wait_until(lambda: self.outputs(port) == b"led=off motor=off\0", describe=twistd.log)
        log = twistd.stop_cleanly()
        self.assertRegex(log, r"Output motor back to its safe level \(off\): 127\.0\.0\.1:\d+, which drove it, disconnected")
        self.assertNotIn("no command renewed it", log)

    def test_console_stops_repeating_on_enter(self) -> None:
        """Enter ends a repeat; the deadman then expires by itself after its ttl."""
        twistd, port = self.serve()
        console = self.console(port)
        console.type("repeat 0.1 set motor on ttl=0.5")
        console.wait_for_line("motor on")
        console.type("")
        wait_until(lambda: any(line.startswith("console: stopped repeating") for line in console.lines))
        wait_until(lambda: self.outputs(port) == b"led=off motor=off\0", describe=twistd.log)
        log = twistd.stop_cleanly()
        self.assertIn("no command renewed it within its ttl of 0.5 s", log)


class RobotExampleTests(SynchronousTestCase):
    def test_keys_drive_the_motors(self) -> None:
        """The remote control tutorial's robot program: w drives both motors forward while it keeps coming, space stops, q quits."""
        from tests.test_readme import ExampleProcess, example

        motors = ("left_fwd=11,ttl=0.5", "left_back=13,ttl=0.5", "right_fwd=15,ttl=0.5", "right_back=16,ttl=0.5")
        twistd = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, "--journal", "none",
                        *[f"--output={m}" for m in motors])  # fmt: skip
        self.addCleanup(twistd.close)
        port = twistd.wait_port()
        code = example("robot-example", "docs/tutorial/control.md")
        self.assertIn("tcp:host=raspberrypi.local:port=22000", code)
        robot = ExampleProcess(self, code.replace("tcp:host=raspberrypi.local:port=22000", f"tcp:host=127.0.0.1:port={port}"),
                               stdin=subprocess.PIPE)  # fmt: skip

        def outputs() -> bytes:
            with connect_tcp(port) as sock:
                return request(sock, b"outputs").split(b";")[0].rstrip(b"\0")

        def pressing(key: bytes, wanted: bytes):
            def check():  # a held key repeats: send it again at each look
                robot.process.stdin.write(key)
                robot.process.stdin.flush()
                return outputs() == wanted
            return check

        wait_until(lambda: "claimed" in robot.text(), describe=robot.text)
        wait_until(pressing(b"w", b"left_fwd=on left_back=off right_fwd=on right_back=off"), describe=robot.text)
        wait_until(pressing(b"d", b"left_fwd=on left_back=off right_fwd=off right_back=on"), describe=robot.text)
        wait_until(pressing(b" ", b"left_fwd=off left_back=off right_fwd=off right_back=off"), describe=robot.text)
        robot.process.stdin.write(b"q")
        robot.process.stdin.close()
        self.assertEqual(robot.process.wait(DEADLINE), 0, robot.text())
        with connect_tcp(port) as sock:  # its claim ended with its connection
            self.assertEqual(request(sock, b"outputs"), b"left_fwd=off left_back=off right_fwd=off right_back=off\0")
        twistd.stop_cleanly()


class CertificateGrantTests(_TLSTestMixin, SynchronousTestCase):
    """Over mutual TLS, --control-cert CN grants control to that certificate, whatever its address."""

    def query(self, port: int, *messages: str):
        pki = self.pki
        return run_query(tls_client(port, pki.trust_dir, cert=pki.client_cert, key=pki.client_key), *messages)

    def test_named_certificate_drives(self) -> None:
        twistd, port = self.start_tls_serve("--client-ca", self.pki.ca_cert, "--output", "led=12",
                                            "--journal", "none", "--control-cert", "rpisensor test client")  # fmt: skip
        result = self.query(port, "set led on", "outputs")
        self.assertEqual((result.returncode, result.stdout), (0, "led on\nled=on\n"), result.stderr)
        log = twistd.stop_cleanly()
        self.assertRegex(log, r"Control command from 127\.0\.0\.1:\d+ \(certificate rpisensor test client\): set led on")

    def test_other_certificate_reads_only(self) -> None:
        """A valid certificate with another CN may read, not drive; 127.0.0.1 is no grant once --control-cert is given."""
        twistd, port = self.start_tls_serve("--client-ca", self.pki.ca_cert, "--output", "led=12",
                                            "--journal", "none", "--control-cert", "my-pc")  # fmt: skip
        result = self.query(port, "set led on", "outputs", "go")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, REFUSED.decode().rstrip("\0") + "\nled=off\nButton released\n")
        twistd.stop_cleanly()


class JournalTests(SynchronousTestCase):
    def test_output_changes_are_journaled_once(self) -> None:
        """Start-up's safe level, each change and the safe level at SIGTERM are entries; a restart adds none."""
        import sqlite3
        from contextlib import closing

        def serve(directory=None) -> Twistd:
            twistd = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, "--output", "led=12",
                            "--journal", "journal.sqlite", cwd=directory)  # fmt: skip
            self.addCleanup(twistd.close)
            return twistd

        def entries(directory) -> list[tuple]:
            with closing(sqlite3.connect(os.path.join(directory, "journal.sqlite"))) as db:
                return db.execute("SELECT sensor, value, text FROM entries WHERE sensor = 'led' ORDER BY seq").fetchall()

        first = serve()
        port = first.wait_port()
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"pwm led 40"), b"led pwm 40%\0")
            self.assertEqual(request(sock, b"set led on"), b"led on\0")
        wait_until(lambda: len(entries(first.directory)) == 3, describe=first.log)
        first.stop_cleanly()
        self.assertEqual(entries(first.directory),
                         [("led", 0, "off"), ("led", 0.4, "pwm 40%"), ("led", 1, "on"), ("led", 0, "off")])  # fmt: skip
        again = serve(first.directory)
        with connect_tcp(again.wait_port()) as sock:
            self.assertEqual(request(sock, b"outputs"), b"led=off\0")
        again.stop_cleanly()
        self.assertEqual(len(entries(first.directory)), 4)
