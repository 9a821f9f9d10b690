"""
C{rpisensor watch} as a user runs it, against a real C{twistd rpisensor
serve} with simulated pins: one line per reading as it comes, C{--json},
C{--after}, a dropped link resumed without loss or repeat, and its ends:
Ctrl-C, a closed pipe (C{| head}), a resume point the Pi does not have.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from tests.faultproxy import FaultProxy
from tests.processes import Twistd, connect_tcp, request, wait_until

RPISENSOR = [sys.executable, "-c", "from rpisensor.app.cli import main; main()"]


@pytest.fixture(scope="module")
def pi():
    twistd = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none",
                    "--listen", "tcp:0:interface=127.0.0.1")  # fmt: skip
    port = twistd.wait_port()
    yield port
    twistd.close()


def sim(port: int, *actions: str) -> None:
    with connect_tcp(port) as sock:
        for action in actions:
            request(sock, f"sim button {action}".encode())


class Watch:
    """C{rpisensor watch ARGS} in the background; its stdout lines and stderr collected as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([*RPISENSOR, "watch", *args], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.errors), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_lines(self, count: int) -> list[str]:
        wait_until(lambda: len(self.lines) >= count, describe=self.describe)
        return self.lines

    def describe(self) -> str:
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr:\n" + "\n".join(self.errors)

    def end(self, signum: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(30)
        for thread in self._threads:
            thread.join(30)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def texts(lines: list[str]) -> list[str]:
    """C{button Button pressed} of each C{TIME button Button pressed}."""
    return [line.split(" ", 1)[1] for line in lines]


def test_one_line_per_reading_then_ctrl_c(pi):
    sim(pi, "release")
    watch = Watch(f"127.0.0.1:{pi}")
    try:
        watch.wait_lines(1)  # the state when subscribed
        assert texts(watch.lines) == ["button Button released"]
        assert watch.lines[0][:4].isdigit() and watch.lines[0].split(" ")[0].endswith("Z")
        sim(pi, "press", "release", "press")
        watch.wait_lines(4)
        assert texts(watch.lines) == ["button Button released", "button Button pressed",
                                      "button Button released", "button Button pressed"]  # fmt: skip
        assert watch.end(signal.SIGINT) == 130, watch.describe()
        assert not any("Traceback" in line for line in watch.errors), watch.describe()
        assert not any("Disconnected" in line for line in watch.errors), watch.describe()
    finally:
        watch.close()


def test_json_and_after(pi):
    sim(pi, "release", "press")
    watch = Watch("--json", f"tcp:host=127.0.0.1:port={pi}", "--after", "0")
    try:
        lines = watch.wait_lines(3)
        records = [json.loads(line) for line in lines]
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))  # everything, from the start
        assert records[0]["kind"] == "reading" and records[0]["sensor"] == "button"
        assert set(records[0]) == {"kind", "device", "stream", "seq", "ts", "synced", "sensor", "value", "text",
                                   "unit"}  # fmt: skip
        assert watch.end() == 130
    finally:
        watch.close()


def test_a_resume_point_the_pi_does_not_have(pi):
    watch = Watch(f"127.0.0.1:{pi}", "--after", "99999")
    try:
        assert watch.process.wait(30) == 1
        watch.end()
        assert watch.lines == []
        assert any("nothing after 99999 in stream" in line for line in watch.errors), watch.describe()
    finally:
        watch.close()


def test_a_closed_pipe_ends_it_quietly(pi):
    sim(pi, "release")
    head = subprocess.Popen([*RPISENSOR, "watch", f"127.0.0.1:{pi}"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert head.stdout.readline().endswith(" button Button released\n")
        head.stdout.close()  # as head does once it has its lines
        sim(pi, "toggle", "toggle")
        assert head.wait(30) == 0
        errors = head.stderr.read()
        assert "Traceback" not in errors and "Broken" not in errors, errors
    finally:
        if head.poll() is None:
            head.kill()
        head.wait()


def test_a_dropped_link_resumes_without_loss_or_repeat(pi):
    sim(pi, "release")
    proxy = FaultProxy(pi)
    watch = Watch(f"127.0.0.1:{proxy.port}")
    try:
        watch.wait_lines(1)
        proxy.refuse(True)
        proxy.cut()
        wait_until(lambda: any("Disconnected" in line for line in watch.errors), describe=watch.describe)
        sim(pi, "press", "release", "press")  # while watch cannot see them
        proxy.refuse(False)
        watch.wait_lines(4)
        sim(pi, "release")
        watch.wait_lines(5)
        assert texts(watch.lines) == ["button Button released", "button Button pressed", "button Button released",
                                      "button Button pressed", "button Button released"]  # fmt: skip
        assert watch.end() == 130
    finally:
        watch.close()
        proxy.close()
