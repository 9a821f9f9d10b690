"""
Fleets through a real Mosquitto (tests/mosquitto.py) into a real PostgreSQL
(tests/postgres.py), as a user runs them, all C{twistd} processes:

  - C{report --mqtt --ack end-to-end}: the broker's PUBACK lets nothing go; only a
    collector's ack, once its database committed, does.
  - C{collect --mqtt}, two of them on one shared subscription: both store a share of one
    Pi's stream; one killed mid-stream, the other takes the rest; every reading once.
  - C{collect --listen ... --publish-mqtt}: a Pi on rpisensor's own protocol appears on
    MQTT, every reading, also across a broker that was away (the Pi kept its readings).

Every wait is for a condition; nothing is timed.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.mqtt.messages import parse_stream_message
from tests import postgres
from tests.faultproxy import FaultProxy
from tests.mosquitto import Mosquitto, Subscriber, require_mosquitto
from tests.processes import Twistd, connect_unix, request, wait_until
from tests.support import LOOPBACK
from tests.test_exactly_once import unacknowledged

DEVICE = "pi-fleet"


def status(directory: Path) -> dict[str, str]:
    try:
        with connect_unix(str(directory / "status.sock")) as sock:
            line = request(sock, b"status").decode().rstrip("\0")
    except OSError:
        return {}
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


class FleetTests(SynchronousTestCase):
    def setUp(self) -> None:
        require_mosquitto()
        postgres.skip_or_fail(pytest)
        self.broker = Mosquitto.start()
        self.addCleanup(self.broker.close)
        self.pg = postgres.PostgresServer(fsync=False)
        self.pg.start()
        self.addCleanup(self.pg.destroy)
        self.url = self.pg.create("fleet", "fleet")
        self.root = Path(tempfile.mkdtemp(prefix="rpisensor-fleet-"))
        self.pi = self.root / "pi"
        self.pi.mkdir()
        self.processes: list[Twistd] = []

    def tearDown(self) -> None:
        for twistd in self.processes:
            twistd.close()

    def twistd(self, *args: str, cwd: Path | None = None) -> Twistd:
        twistd = Twistd("rpisensor", *args, cwd=str(cwd) if cwd is not None else None)
        self.processes.append(twistd)
        return twistd

    def reporter(self, *transport: str, pressing: bool = True) -> Twistd:
        return self.twistd(
            "report", *transport, "--gpio", "sim", "--device", DEVICE, "--on-change", "--interval", "0.02",
            *(("--sim-pattern", "button=0.04,0.04") if pressing else ()), "--outbox", "outbox.sqlite",
            "--status-listen", "unix:status.sock", "--max-delay", "1", cwd=self.pi,
        )  # fmt: skip

    def collector(self, url: str) -> Twistd:
        """C{collect --mqtt URL} into the database, once it has subscribed (its tables made)."""
        collector = self.twistd("collect", "--mqtt", url, "--store", self.url)
        collector.wait_for("Connected to the MQTT broker")
        return collector

    def sql(self, text: str) -> str:
        return self.pg.psql(text, "fleet")

    def stored(self) -> int:
        return int(self.sql("SELECT coalesce(max(stored), 0) FROM streams") or 0)

    def logs(self) -> str:
        return "\n".join(f"--- {' '.join(t.args[3:6])}\n{t.log()[-3000:]}" for t in self.processes)

    def drained(self) -> bool:
        return status(self.pi).get("outbox") == "0"

    def drain(self, *transport: str) -> None:
        """
        Run a quiet reporter over C{transport} until its outbox is acknowledged whole, then stop
        it: its status can say C{outbox=0} before it took its first reading, which a stop right
        then leaves unacknowledged (then it runs again).
        """
        for _ in range(5):
            pi = self.reporter(*transport, pressing=False)
            wait_until(self.drained, describe=self.logs)
            pi.stop_cleanly()
            if unacknowledged(self.pi / "outbox.sqlite") == 0:
                return
        self.fail(f"the outbox was never acknowledged whole:\n{self.logs()}")

    def outbox_last(self) -> int:
        import sqlite3

        with sqlite3.connect(self.pi / "outbox.sqlite") as db:
            return db.execute("SELECT MAX(COALESCE(last, seq)) FROM entries").fetchone()[0] or 0

    def check_once(self) -> int:
        """Every entry the stopped reporter took is in the database once, 1..N, and the audit agrees."""
        last = self.outbox_last()
        seqs = [int(n) for n in self.sql("SELECT seq FROM readings ORDER BY seq").split()]
        self.assertEqual(seqs, list(range(1, last + 1)))
        self.assertEqual(self.stored(), last)
        return last

    def test_only_a_collector_lets_go(self) -> None:
        """With no collector the broker acknowledges every reading, and the outbox keeps them all."""
        pi = self.reporter("--mqtt", f"mqtt://127.0.0.1:{self.broker.port}", "--ack", "end-to-end",
                           "--ack-timeout", "1")  # fmt: skip
        wait_until(lambda: int(status(self.pi).get("outbox", "0")) >= 100, describe=self.logs)
        pi.wait_for("publishing them again")  # nobody acked: published again, and kept
        self.collector(f"mqtt://127.0.0.1:{self.broker.port}")
        wait_until(lambda: self.stored() >= 100, describe=self.logs)
        pi.stop_cleanly()
        self.drain("--mqtt", f"mqtt://127.0.0.1:{self.broker.port}", "--ack", "end-to-end")
        self.assertGreater(self.check_once(), 100)

    def test_two_collectors_share_a_stream_and_take_over(self) -> None:
        """
        Collector A reaches the broker directly, B through a proxy (so the database tells their
        readings apart by peer): both store a share of the one stream; A killed, B takes the rest.
        """
        proxy = FaultProxy(self.broker.port)
        self.addCleanup(proxy.close)
        a = self.collector(f"mqtt://127.0.0.1:{self.broker.port}")
        self.collector(f"mqtt://127.0.0.1:{proxy.port}")
        pi = self.reporter("--mqtt", f"mqtt://127.0.0.1:{self.broker.port}", "--ack", "end-to-end",
                           "--ack-timeout", "2")  # fmt: skip

        def peers() -> dict[str, int]:
            rows = self.sql("SELECT peer, count(*) FROM readings GROUP BY peer")
            return {line.split("|")[0]: int(line.split("|")[1]) for line in rows.splitlines()}

        wait_until(lambda: len(peers()) == 2 and min(peers().values()) >= 20, describe=self.logs)
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        taken = self.stored()
        wait_until(lambda: self.stored() >= taken + 100, describe=self.logs)
        pi.stop_cleanly()
        self.drain("--mqtt", f"mqtt://127.0.0.1:{self.broker.port}", "--ack", "end-to-end")
        self.check_once()
        after = self.sql(f"SELECT DISTINCT peer FROM readings WHERE seq > {taken + 20}").split()
        self.assertEqual(after, [f"mqtt://127.0.0.1:{proxy.port}"])

    def test_the_bridge_publishes_what_reporters_send(self) -> None:
        """
        collect --listen --publish-mqtt: every reading of a Pi on rpisensor's own protocol is
        on MQTT (deduplicated on seq: QoS 1), and stored once; while the broker is away the
        collector acknowledges nothing, and the Pi keeps what it took.
        """
        seen = Subscriber(self.broker.port, [f"rpisensor/{DEVICE}/stream"])
        self.addCleanup(seen.close)
        collector = self.twistd("collect", "--listen", LOOPBACK, "--store", self.url, "--publish-mqtt",
                                f"mqtt://127.0.0.1:{self.broker.port}")  # fmt: skip
        port = collector.wait_port()
        collector.wait_for("Connected to the MQTT broker")
        self.reporter("--connect", f"127.0.0.1:{port}")
        wait_until(lambda: len(seen.on(f"rpisensor/{DEVICE}/stream")) >= 30, describe=self.logs)
        self.broker.stop(signal.SIGKILL)
        waiting = lambda: int(status(self.pi).get("outbox", "0"))  # noqa: E731
        wait_until(lambda: waiting() >= 30, describe=self.logs)
        held, then = self.stored(), waiting()
        wait_until(lambda: waiting() >= then + 40, describe=self.logs)
        self.assertEqual(self.stored(), held)  # nothing stored (or acknowledged) without the broker
        self.broker.restart()
        pi = self.processes[-1]
        pi.stop_cleanly()
        self.drain("--connect", f"127.0.0.1:{port}")
        last = self.check_once()
        wait_until(lambda: {parse_stream_message(m.payload)[1].seq for m in seen.on(f"rpisensor/{DEVICE}/stream")}
                   >= set(range(1, last + 1)), describe=self.logs)  # fmt: skip
        collector.stop_cleanly()


if not os.environ.get("RPISENSOR_MOSQUITTO_REQUIRED") and postgres.missing_reason() is not None:
    FleetTests.skip = str(postgres.missing_reason())
