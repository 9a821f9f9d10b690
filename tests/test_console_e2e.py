"""
C{rpisensor console} as a person runs it: on a real terminal (a pty) it
leaves the terminal as it found it, echo and line mode on, however it
ends; it comes back by itself when the server restarts; its output piped
into C{head} ends it quietly.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
import time

import pytest

from tests.processes import DEADLINE, Twistd, free_port, wait_until

CONSOLE = [sys.executable, "-c", "from rpisensor.app.cli import main; main()", "console"]


@pytest.fixture
def pi():
    twistd = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none",
                    "--listen", "tcp:0:interface=127.0.0.1")  # fmt: skip
    yield twistd.wait_port()
    twistd.close()


class OnATerminal:
    """The console with a pty as its terminal, read by the test."""

    def __init__(self, port: int, home: str) -> None:
        self.master, self.slave = pty.openpty()
        self.process = subprocess.Popen(
            [*CONSOLE, f"127.0.0.1:{port}"], stdin=self.slave, stdout=self.slave, stderr=self.slave,
            env={**os.environ, "HOME": home}, start_new_session=True,
        )  # fmt: skip
        self.output = b""

    def read_until(self, text: bytes) -> None:
        deadline = time.monotonic() + DEADLINE
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"the console did not show {text!r}:\n{self.output.decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                self.output += os.read(self.master, 4096)

    def modes(self) -> tuple[bool, bool]:
        """Whether the terminal echoes, and reads whole lines."""
        flags = termios.tcgetattr(self.slave)[3]
        return bool(flags & termios.ECHO), bool(flags & termios.ICANON)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.parametrize("how", ["quit", "ctrl-c"])
def test_the_terminal_is_left_as_it_was(pi, tmp_path, how):
    console = OnATerminal(pi, str(tmp_path))
    try:
        console.read_until(b"rpisensor> ")
        assert console.modes() == (False, False)  # readline's, while it waits for a line
        if how == "quit":
            os.write(console.master, b"quit\r")
        else:
            console.process.send_signal(signal.SIGINT)  # what Ctrl-C at the prompt sends
        assert console.process.wait(DEADLINE) == 0
        assert console.modes() == (True, True)  # stty -a: echo icanon
    finally:
        console.close()


def test_it_reconnects_when_the_server_comes_back(tmp_path):
    port = free_port()
    serve = ("rpisensor", "serve", "--gpio", "sim", "--journal", "journal.sqlite", "--listen",
             f"tcp:{port}:interface=127.0.0.1")  # fmt: skip
    twistd = Twistd(*serve, cwd=str(tmp_path))
    twistd.wait_port()
    console = subprocess.Popen([*CONSOLE, f"127.0.0.1:{port}", "-t", "5"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in console.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: "* button: Button released (state when subscribed)" in lines, describe=lambda: "\n".join(lines))
        twistd.stop_cleanly()
        wait_until(lambda: any("lost the connection" in line and "reconnecting" in line for line in lines),
                   describe=lambda: "\n".join(lines))  # fmt: skip
        twistd = Twistd(*serve, cwd=str(tmp_path))
        twistd.wait_port()
        wait_until(lambda: f"console: connected to tcp:host=127.0.0.1:port={port} again" in lines,
                   describe=lambda: "\n".join(lines))  # fmt: skip
        console.stdin.write("sim button press\n")
        console.stdin.flush()
        wait_until(lambda: "Button pressed" in lines and "* button: Button pressed" in lines,
                   describe=lambda: "\n".join(lines))  # fmt: skip
        console.stdin.write("quit\n")
        console.stdin.flush()
        assert console.wait(DEADLINE) == 0
    finally:
        if console.poll() is None:
            console.kill()
        console.wait()
        twistd.close()


def test_piped_into_head_it_ends_quietly(pi):
    console = subprocess.Popen([*CONSOLE, f"127.0.0.1:{pi}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert console.stdout.readline().startswith("console: connected to")
        console.stdout.close()  # head has its line
        console.stdin.write("sim button toggle\nsim button toggle\n")
        console.stdin.flush()
        assert console.wait(DEADLINE) == 0
        errors = console.stderr.read()
        assert "Traceback" not in errors and "Broken pipe" not in errors, errors
    finally:
        if console.poll() is None:
            console.kill()
        console.wait()
