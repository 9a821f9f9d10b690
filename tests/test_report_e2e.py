"""
A real C{twistd ... report --gpio sim} against the fake v2 collector of
L{tests.v2_collector}, run in this process's reactor (pytest-twisted) on
loopback: the collector goes away and comes back, the reporter is killed
with SIGKILL (while the collector is away, and while it streams) and
restarted. What the collector stored is compared with the reporter's outbox
file, never with timing: every seq once, in order, each with the reading
the outbox holds for it.

The reporter's status (its default unix socket in its working directory)
is what the test asks to know when readings wait in the outbox.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest_twisted
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.roles.query import query
from rpisensor.testing import wait_until
from rpisensor.wire import v2
from tests.processes import Twistd, daemon_child_done, run_twistd
from tests.v2_collector import FakeCollectorFactory

DEVICE = "pi-e2e"


def read_outbox(path: Path, scratch: Path) -> dict[int, tuple]:
    """The readings in an outbox file (read from a copy, so the file itself is left as it is)."""
    copy = scratch / f"copy-{len(list(scratch.iterdir()))}"
    copy.mkdir()
    for suffix in ("", "-wal"):
        if os.path.exists(f"{path}{suffix}"):
            shutil.copy(f"{path}{suffix}", copy / f"outbox.sqlite{suffix}")
    with closing(sqlite3.connect(copy / "outbox.sqlite")) as db:
        rows = db.execute("SELECT seq, ts, value, text FROM entries WHERE last IS NULL ORDER BY seq").fetchall()
    return {seq: (ts, value, text) for seq, ts, value, text in rows}


async def status(reactor, directory: Path) -> str:
    [line] = await query(reactor, f"unix:path={directory / 'rpisensor-report.sock'}", ["status"], 10)
    return line


async def ended(reactor, twistd: Twistd, signum: int) -> str:
    """Send C{signum}, wait (without blocking the reactor) until the process is gone; its log."""
    twistd.process.send_signal(signum)
    await wait_until(lambda: twistd.process.poll() is not None, reactor)
    log = twistd.log()
    twistd.close()
    return log


@pytest_twisted.ensureDeferred
async def test_outage_and_sigkill_lose_and_duplicate_nothing(reactor, tmp_path):
    collector = FakeCollectorFactory(reactor)
    store = collector.store
    port = reactor.listenTCP(0, collector, interface="127.0.0.1")
    number = port.getHost().port
    pi = tmp_path / "pi"
    pi.mkdir()
    scratch = tmp_path / "copies"
    scratch.mkdir()
    outbox = pi / "rpisensor-outbox.sqlite"
    args = (
        "rpisensor", "report", "--gpio", "sim", "--interval", "0.05", "--protocol", "2",
        "--max-delay", "1", "--device", DEVICE, "--connect", f"tcp:host=127.0.0.1:port={number}",
    )  # fmt: skip
    reporter = Twistd(*args, cwd=str(pi))
    logs = []
    try:
        await wait_until(lambda: len(store.seqs()) >= 10, reactor, timeout=60)

        # The collector goes away; the reporter keeps sampling into its outbox.
        await port.stopListening()
        for connection in list(collector.connections):
            connection.transport.abortConnection()
        stored_before = max(store.seqs())

        async def waiting_in_outbox() -> int:
            line = await status(reactor, pi)
            match = re.search(r" connected=no protocol=none outbox=(\d+) ", line)
            return int(match.group(1)) if match else 0

        for _ in range(1200):  # (a deadline of about a minute, not a measurement)
            if await waiting_in_outbox() >= 30:
                break
            await deferLater(reactor, 0.05)
        else:
            raise AssertionError(f"the outbox never held 30 readings:\n{reporter.log()}")

        # Killed while the collector is away, then started again on the same outbox.
        logs.append(await ended(reactor, reporter, signal.SIGKILL))
        killed_away = read_outbox(outbox, scratch)
        assert max(killed_away) >= stored_before + 30, (stored_before, max(killed_away))
        reporter = Twistd(*args, cwd=str(pi))  # (its status socket is left behind: removed at start)
        port = reactor.listenTCP(number, collector, interface="127.0.0.1")
        await wait_until(lambda: max(store.seqs()) >= max(killed_away) + 20, reactor, timeout=60)

        # Killed while streaming, started again.
        logs.append(await ended(reactor, reporter, signal.SIGKILL))
        killed_streaming = read_outbox(outbox, scratch)
        reporter = Twistd(*args, cwd=str(pi))
        await wait_until(lambda: max(store.seqs()) >= max(killed_streaming) + 20, reactor, timeout=60)
        line = await status(reactor, pi)
        assert f" device={DEVICE} connected=yes protocol=2 " in line, line
        last = await ended(reactor, reporter, signal.SIGTERM)
        assert reporter.process.returncode == 0, last
        logs.append(last)
    finally:
        reporter.close()
        await port.stopListening()
    final = read_outbox(outbox, scratch)

    for log in logs:
        assert "Traceback" not in log, log
    readings = store.readings()
    seqs = [r.seq for r in readings]
    assert seqs == list(range(1, len(seqs) + 1)), "every seq once, in order"
    assert store.gaps() == []
    assert all(r.device == DEVICE for r in readings)
    stored = {r.seq: (r.ts, r.value, r.text) for r in readings}
    # Each seq the reporter ever sent stands for one reading: replays after a kill are the same one.
    sent: dict[int, set] = {}
    for text in collector.frames:
        if text.startswith("reading "):
            frame = v2.parse(text)
            sent.setdefault(frame.seq, set()).add((frame.ts, frame.value, frame.text))
    assert all(len(versions) == 1 for versions in sent.values()), {s: v for s, v in sent.items() if len(v) > 1}
    # What the outbox held at each kill, and at the end, is what the collector has.
    for snapshot in (killed_away, killed_streaming, final):
        for seq, reading in snapshot.items():
            if seq in stored:
                assert stored[seq] == reading, seq
    assert set(killed_away) <= set(stored), "readings taken while the collector was away arrived"
    assert set(killed_streaming) <= set(stored)
    assert max(final) == max(stored)  # the outbox keeps its newest entry: everything up to it arrived


class OutboxStartTwistdTests(SynchronousTestCase):
    """An outbox that cannot be opened stops report with one line, in the foreground and as a daemon."""

    def test_foreground(self) -> None:
        exited = run_twistd(
            "-n", "--pidfile=", "rpisensor", "report", "--gpio", "sim", "--connect", "tcp:host=127.0.0.1:port=9",
            "--outbox", "/nonexistent-dir/outbox.sqlite",
        )  # fmt: skip
        self.assertEqual(exited.code, 1, exited.log)
        self.assertIn("rpisensor: cannot use the outbox /nonexistent-dir/outbox.sqlite: ", exited.log)
        self.assertNotIn("Traceback", exited.log)

    def short_directory(self) -> str:
        """A directory whose path fits a unix socket's (the tests' own are too long)."""
        directory = tempfile.mkdtemp(prefix="rps-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def test_daemon(self) -> None:
        directory = Path(self.short_directory())
        exited = run_twistd(
            "--logfile=twistd.log", "--pidfile=report.pid", "rpisensor", "report", "--gpio", "sim",
            "--connect", "tcp:host=127.0.0.1:port=9", "--outbox", "/nonexistent-dir/outbox.sqlite",
            cwd=str(directory),
        )  # fmt: skip
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertIn("cannot use the outbox /nonexistent-dir/outbox.sqlite", exited.log)  # (twistd cuts it short)
        log = daemon_child_done(directory / "report.pid", directory / "twistd.log", "cannot use the outbox")
        self.assertIn(
            "cannot use the outbox /nonexistent-dir/outbox.sqlite: its directory /nonexistent-dir does not exist "
            "(create it: mkdir -p /nonexistent-dir)", log,
        )  # fmt: skip
        self.assertEqual(len([line for line in log.splitlines() if "cannot use the outbox" in line]), 1, log)
        self.assertNotIn("Traceback", log)

    def test_second_reporter_in_one_directory(self) -> None:
        """A second reporter in the same state directory is refused: one outbox, one stream."""
        directory = self.short_directory()
        first = Twistd("rpisensor", "report", "--gpio", "sim", "--connect", "tcp:host=127.0.0.1:port=9",
                       cwd=directory)  # fmt: skip
        self.addCleanup(first.close)
        first.wait_for("Outbox .*rpisensor-outbox.sqlite: stream")
        exited = run_twistd(
            "-n", "--pidfile=", "rpisensor", "report", "--gpio", "sim", "--connect", "tcp:host=127.0.0.1:port=9",
            cwd=directory,
        )  # fmt: skip
        self.assertEqual(exited.code, 1, exited.log)
        self.assertIn("another reporter answers there", exited.log)
        self.assertNotIn("Traceback", exited.log)
        exited = run_twistd(
            "-n", "--pidfile=", "rpisensor", "report", "--gpio", "sim", "--connect", "tcp:host=127.0.0.1:port=9",
            "--status-listen", "none", cwd=directory,
        )  # fmt: skip
        self.assertEqual(exited.code, 1, exited.log)
        self.assertIn("another reporter is using it", exited.log)
        self.assertNotIn("Traceback", exited.log)
        first.stop_cleanly()


class ReportTacTests(SynchronousTestCase):
    """tac/report.tac takes the outbox from RPISENSOR_OUTBOX."""

    tac = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "tac", "report.tac"))

    def test_outbox_from_the_environment(self) -> None:
        directory = tempfile.mkdtemp(prefix="rps-")
        self.addCleanup(shutil.rmtree, directory, True)
        env = {"RPISENSOR_GPIO": "sim", "RPISENSOR_CONNECT": "tcp:host=127.0.0.1:port=9",
               "RPISENSOR_OUTBOX": "mine.sqlite"}  # fmt: skip
        twistd = Twistd("-y", self.tac, cwd=directory, env=env)
        self.addCleanup(twistd.close)
        twistd.wait_for(rf"Outbox {re.escape(directory)}/mine\.sqlite: stream [0-9a-f]{{16}}")
        twistd.stop_cleanly()
        self.assertTrue(os.path.exists(os.path.join(directory, "mine.sqlite")))

    def test_unusable_outbox(self) -> None:
        exited = run_twistd(
            "-n", "--pidfile=", "-y", self.tac,
            env={"RPISENSOR_GPIO": "sim", "RPISENSOR_OUTBOX": "/nonexistent-dir/x.sqlite"},
        )  # fmt: skip
        self.assertEqual(exited.code, 1, exited.log)
        self.assertIn("rpisensor: cannot use the outbox /nonexistent-dir/x.sqlite", exited.log)
        self.assertNotIn("Traceback", exited.log)
