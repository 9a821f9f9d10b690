"""
Chaos, exactly once, with what a fleet runs: a real PostgreSQL, two collectors and two
reporters (a button toggling, a sensor sampling), all real C{twistd} processes, in both
ways a fleet is built:

  - TCP with failover: each reporter has C{--connect A --connect B}, a fault proxy in front of
    each collector (a dead collector's port refuses, as a real one does);
  - MQTT with a shared subscription: reporters with C{report --mqtt --ack end-to-end}, the
    collectors with C{collect --mqtt}, a real Mosquitto, fault proxies in front of it.

At random moments (seeded; the seed is in the failure message) one of: SIGKILL a reporter, a
collector, PostgreSQL or the broker, each started again after a moment; cut every link (RST or
FIN). Then, once everything runs again and each reporter says its outbox is acknowledged: C{rpisensor
audit} finds no hole and no duplicate, and every reading each reporter's outbox ever held (kept
with C{--outbox-keep}) is in the database once, the same reading (its seq, time, sensor and
value), under the reporter's one stream.

C{RPISENSOR_CHAOS_SECONDS} (default 30) is how long the chaos lasts in each test;
C{RPISENSOR_CHAOS_SEED} replays a run. Every wait is for a condition; nothing is timed. Plain
pytest tests (they take minutes: trial, which CI runs the suite under too, does not collect them).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
from contextlib import closing
from pathlib import Path

import pytest

from tests import postgres
from tests.faultproxy import FaultProxy
from tests.mosquitto import Mosquitto, require_mosquitto
from tests.processes import Twistd, connect_unix, request, wait_until
from tests.test_exactly_once import unacknowledged

CHAOS_SECONDS = float(os.environ.get("RPISENSOR_CHAOS_SECONDS", "30"))
#: Seconds the fleet gets to catch up after the chaos (a reporter's backlog, the retry waits).
CATCH_UP = max(120.0, CHAOS_SECONDS / 2)
DEVICES = ("pi-a", "pi-b")


def outbox_entries(path: Path) -> tuple[str, dict[int, tuple]]:
    """The stream of a stopped reporter's outbox, and each reading it holds: seq -> (ts, sensor, value)."""
    with closing(sqlite3.connect(path)) as db:
        (stream,) = db.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()
        rows = db.execute("SELECT seq, ts, sensor, value FROM entries WHERE reason IS NULL").fetchall()
    return stream, {seq: (ts, sensor, float(value)) for seq, ts, sensor, value in rows}


class Fleet:
    """The processes of one test, started and killed by the chaos."""

    def __init__(self, case: unittest.TestCase, rng: random.Random) -> None:
        self.case = case
        self.rng = rng
        self.actions: list[str] = []
        self.summary: dict[str, int] = {}
        self.root = Path(tempfile.mkdtemp(prefix="rpisensor-chaos-"))
        case.addCleanup(self._cleanup)
        self.pg = postgres.PostgresServer(fsync=False)
        self.pg.start()
        self.url = self.pg.create("chaos", "chaos")
        self.collectors: list[Twistd | None] = [None, None]
        self.reporters: list[Twistd | None] = [None, None]
        self.retired: list[Twistd] = []
        for i in range(2):
            (self.root / f"c{i}").mkdir()
            home = self.root / f"r{i}"
            home.mkdir()
            (home / "temp").write_text("21.5\n")

    def _cleanup(self) -> None:
        for twistd in [*self.collectors, *self.reporters, *self.retired]:
            if twistd is not None:
                twistd.close()
        self.close_network()
        self.pg.destroy()
        shutil.rmtree(self.root, ignore_errors=True)

    def close_network(self) -> None:
        """The broker and proxies (the subclass's)."""

    # -- the processes ------------------------------------------------------------------------

    def reporter_options(self, i: int) -> list[str]:
        raise NotImplementedError

    def collector_options(self, i: int) -> list[str]:
        raise NotImplementedError

    def start_reporter(self, i: int, quiet: bool = False) -> None:
        """A reporter with its button toggling and its sensor sampling; C{quiet}: neither (the last one)."""
        home = self.root / f"r{i}"
        busy = ("--sim-pattern", "button=0.25,0.35", "--sensor", f"temp=file:{home / 'temp'},interval=0.5,unit=°C")
        self.reporters[i] = Twistd(
            "rpisensor", "report", *self.reporter_options(i), "--gpio", "sim", "--device", DEVICES[i],
            "--on-change", "--interval", "0.05", *(() if quiet else busy), "--outbox", "outbox.sqlite",
            "--outbox-keep", "1d", "--status-listen", "unix:status.sock", "--dead-peer-timeout", "3",
            "--max-delay", "1", cwd=str(home),
        )  # fmt: skip

    def start_collector(self, i: int) -> None:
        self.collectors[i] = Twistd(
            "rpisensor", "collect", *self.collector_options(i), "--store", self.url, cwd=str(self.root / f"c{i}")
        )

    def kill(self, kind: str, i: int) -> None:
        processes = self.reporters if kind == "reporter" else self.collectors
        twistd = processes[i]
        twistd.process.send_signal(signal.SIGKILL)
        twistd.process.wait()
        self.retired.append(twistd)
        processes[i] = None

    def status(self, i: int) -> dict[str, str]:
        try:
            with connect_unix(str(self.root / f"r{i}" / "status.sock")) as sock:
                line = request(sock, b"status").decode().rstrip("\0")
        except OSError:
            return {}
        return dict(part.split("=", 1) for part in line.split() if "=" in part)

    def logs(self) -> str:
        parts = [f"actions: {', '.join(self.actions)}"]
        for name, twistd in [*(("collector", c) for c in self.collectors), *(("reporter", r) for r in self.reporters)]:
            if twistd is not None:
                parts.append(f"--- {name}\n{twistd.log()[-4000:]}")
        return "\n".join(parts)

    # -- the chaos ----------------------------------------------------------------------------

    def chaos_actions(self) -> list[str]:
        return ["kill reporter", "kill collector", "kill postgresql", "cut rst", "cut fin"]

    def chaos(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(self.rng.uniform(0.5, 4.0))
            self.supervise()
            action = self.rng.choice(self.chaos_actions())
            self.actions.append(action)
            self.act(action)

    def supervise(self) -> None:
        """
        Start again a collector that stopped because PostgreSQL was away while it started (killed
        before it had connected), as systemd's Restart=on-failure does: docs/howto/fleets.md says
        that is how a collector meets a database it cannot reach at start. Any other end fails.
        """
        for i, twistd in enumerate(self.collectors):
            if twistd is None or twistd.process.poll() is None:
                continue
            log = twistd.log()
            self.case.assertIn("cannot open the store", log, f"collector {i} ended:\n{self.logs()}")
            self.case.assertNotIn("Traceback", log)
            self.retired.append(twistd)
            self.collectors[i] = None
            self.actions.append("collector restarted (the database was away at its start)")
            self.collector_up(i)

    def pause(self) -> None:
        time.sleep(self.rng.uniform(0.2, 3.0))

    def act(self, action: str) -> None:
        i = self.rng.randrange(2)
        if action == "kill reporter":
            self.kill("reporter", i)
            self.pause()
            self.start_reporter(i)
        elif action == "kill collector":
            self.collector_down(i)
            self.pause()
            self.collector_up(i)
        elif action == "kill postgresql":
            self.pg.kill()
            self.pause()
            self.pg.start()
        elif action.startswith("cut"):
            self.cut(action.split()[1])

    def collector_down(self, i: int) -> None:
        self.kill("collector", i)

    def collector_up(self, i: int) -> None:
        self.start_collector(i)

    def cut(self, how: str) -> None:
        raise NotImplementedError

    # -- the end --------------------------------------------------------------------------------

    def drain(self, i: int) -> None:
        """
        Stop quiet reporter C{i} once its outbox is acknowledged. (Its status answers before it
        took its first readings, which a stop right then leaves unacknowledged: then it runs again.)
        """
        outbox = self.root / f"r{i}" / "outbox.sqlite"
        for _ in range(5):
            wait_until(lambda: self.status(i).get("outbox") == "0", CATCH_UP,
                       lambda: f"{self.status(0)}\n{self.status(1)}\n{self.logs()}")  # fmt: skip
            self.reporters[i].stop_cleanly()
            self.reporters[i] = None
            if unacknowledged(outbox) == 0:
                return
            self.start_reporter(i, quiet=True)
        self.case.fail(f"reporter {i}: its outbox was never acknowledged whole:\n{self.logs()}")

    def settle_and_check(self) -> None:
        """Every reporter drained and stopped, then the audit and the outboxes against the database."""
        case = self.case
        self.supervise()
        for i in range(2):  # the last ones, quiet: their outboxes stop growing
            wait_until(lambda i=i: self.status(i), describe=self.logs)  # (up: a SIGTERM is handled)
            self.reporters[i].stop_cleanly()
            self.start_reporter(i, quiet=True)
        for i in range(2):
            self.drain(i)
        for i in range(2):
            log = self.collectors[i].stop_cleanly()
            self.collectors[i] = None
            case.assertNotIn("Unhandled", log)
        audit = subprocess.run([sys.executable, "-m", "rpisensor.app.cli", "audit", self.url], capture_output=True,
                               text=True, timeout=120)  # fmt: skip
        case.assertEqual(audit.returncode, 0, f"{audit.stdout}{audit.stderr}\n{self.logs()}")
        case.assertIn("no holes, no duplicates", audit.stdout)
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            for i, device in enumerate(DEVICES):
                stream, held = outbox_entries(self.root / f"r{i}" / "outbox.sqlite")
                streams = [s for (s,) in db.execute("SELECT stream FROM streams WHERE device = %s", (device,))]
                case.assertEqual(streams, [stream], "one stream per reporter, across every restart")
                rows = db.execute(
                    "SELECT seq, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), sensor, value"
                    " FROM readings WHERE device = %s AND stream = %s", (device, stream),
                ).fetchall()  # fmt: skip
                stored = {seq: (ts, sensor, value) for seq, ts, sensor, value in rows}
                case.assertEqual(len(stored), len(rows), "each seq once")
                missing = sorted(set(held) - set(stored))
                case.assertEqual(missing, [], f"{device}: readings of the outbox not in the database")
                wrong = [seq for seq in held if stored[seq] != held[seq]]
                case.assertEqual(wrong, [], f"{device}: stored differently from the outbox")
                (stored_mark,) = db.execute(
                    "SELECT stored FROM streams WHERE device = %s", (device,)
                ).fetchone()
                case.assertEqual(stored_mark, max(held), "the watermark is the outbox's last entry")
                case.assertGreater(len([v for ts, s, v in held.values() if s == "temp"]), 5)
                case.assertGreater(len([v for ts, s, v in held.values() if s == "button"]), 10)
                self.summary[device] = len(held)
        from collections import Counter

        # (Shown with pytest -s: what a long run went through.)
        print(f"\n{type(self).__name__}: {len(self.actions)} actions {dict(Counter(self.actions))}; "
              f"readings {self.summary}, each stored once")


class TCPFleet(Fleet):
    """Reporters with --connect A --connect B, a fault proxy in front of each collector."""

    def __init__(self, case, rng) -> None:
        super().__init__(case, rng)
        self.proxies: list[FaultProxy] = []
        for i in range(2):
            self.start_collector(i)
            self.proxies.append(FaultProxy(self.collectors[i].wait_port()))
        for i in range(2):
            self.start_reporter(i)

    def close_network(self) -> None:
        for proxy in self.proxies:
            proxy.close()

    def collector_options(self, i: int) -> list[str]:
        return ["--listen", "tcp:0:interface=127.0.0.1"]

    def reporter_options(self, i: int) -> list[str]:
        # Each reporter starts with a collector of its own; either takes both.
        ports = [self.proxies[i].port, self.proxies[1 - i].port]
        return [arg for port in ports for arg in ("--connect", f"127.0.0.1:{port}")]

    def collector_down(self, i: int) -> None:
        self.kill("collector", i)
        self.proxies[i].down()

    def collector_up(self, i: int) -> None:
        self.start_collector(i)
        self.proxies[i].target_port = self.collectors[i].wait_port()
        self.proxies[i].up()

    def cut(self, how: str) -> None:
        for proxy in self.proxies:
            proxy.cut(how)


class MQTTFleet(Fleet):
    """
    Reporters with --mqtt --ack end-to-end, collectors with --mqtt (one shared subscription), a
    Mosquitto without persistence (a killed one loses what it held), a fault proxy in front of it
    for the reporters and one for the collectors.
    """

    def __init__(self, case, rng) -> None:
        super().__init__(case, rng)
        self.broker = Mosquitto.start(persistence=False)
        self.proxies = [FaultProxy(self.broker.port), FaultProxy(self.broker.port)]  # the Pis', the PCs'
        for i in range(2):
            self.start_collector(i)
        for i in range(2):
            self.start_reporter(i)

    def close_network(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        self.broker.close()

    def reporter_options(self, i: int) -> list[str]:
        return ["--mqtt", f"mqtt://127.0.0.1:{self.proxies[0].port}", "--ack", "end-to-end", "--ack-timeout", "2",
                "--mqtt-discovery", "none"]  # fmt: skip

    def collector_options(self, i: int) -> list[str]:
        return ["--mqtt", f"mqtt://127.0.0.1:{self.proxies[1].port}"]

    def chaos_actions(self) -> list[str]:
        return [*super().chaos_actions(), "kill broker"]

    def act(self, action: str) -> None:
        if action != "kill broker":
            super().act(action)
            return
        for proxy in self.proxies:
            proxy.down()
        self.broker.stop(signal.SIGKILL)
        self.pause()
        self.broker.restart()
        for proxy in self.proxies:
            proxy.up()

    def cut(self, how: str) -> None:
        for proxy in self.proxies:
            proxy.cut(how)


@pytest.fixture
def chaos():
    """The seed of the random moments, and the fleet's assertions and cleanups."""
    postgres.skip_or_fail(pytest)
    seed = int(os.environ.get("RPISENSOR_CHAOS_SEED") or random.randrange(2**32))
    checks = Checks()
    try:
        yield seed, checks
    finally:
        checks.doCleanups()


class Checks(unittest.TestCase):
    """The assertions and cleanups of a TestCase, for a pytest test (these run under pytest only)."""

    __test__ = False  # (not a test of its own)

    def runTest(self) -> None:
        pass


def run_fleet(kind: type[Fleet], seed: int, checks: Checks) -> None:
    try:
        fleet = kind(checks, random.Random(seed))
        fleet.chaos(CHAOS_SECONDS)
        fleet.settle_and_check()
    except AssertionError as e:
        raise AssertionError(f"seed {seed} (RPISENSOR_CHAOS_SEED replays it): {e}") from None


def test_tcp_with_failover(chaos) -> None:
    run_fleet(TCPFleet, *chaos)


def test_mqtt_with_a_shared_subscription(chaos) -> None:
    require_mosquitto()
    run_fleet(MQTTFleet, *chaos)
