"""
End to end: C{twistd rpisensor report} and C{collect} run as real processes,
with plain blocking sockets playing reporters (the tutorial's DataClient3)
where a test needs to control the bytes on the wire exactly.

Only loopback addresses are used. Every wait is for a condition, with a
long deadline (L{tests.processes.DEADLINE}); nothing asserts a duration.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import FOREGROUND, Twistd, connect_tcp, run_twistd, wait_until
from tests.support import LOOPBACK, read_jsonl, read_sqlite, read_store

RELEASED = "Button released"
#: What C{collect} stores for each record: the UTC time, with a Z.
UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
#: C{collect} logs this once the message is in the store.
STORED_LINE = re.compile(r"\] Message from (?P<peer>\S+): (?P<message>.*)$", re.MULTILINE)


def stored_messages(collector: Twistd) -> list[tuple[str, str]]:
    """(peer, message) of every message the collector has logged as stored."""
    return [(m["peer"], m["message"]) for m in STORED_LINE.finditer(collector.log())]


def peer_of(sock: socket.socket) -> str:
    """The client socket's own address, as the collector names its peer."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


class _CollectorTestMixin:
    """Starts C{twistd} children and store directories that are always cleaned up."""

    def store_path(self, name: str) -> Path:
        directory = tempfile.mkdtemp(prefix="rpisensor-store-")
        self.addCleanup(shutil.rmtree, directory, True)
        return Path(directory) / name

    def start(self, *args: str) -> Twistd:
        twistd = Twistd("rpisensor", *args)
        self.addCleanup(twistd.close)
        return twistd

    def start_collector(self, store: Path) -> tuple[Twistd, int]:
        """Start C{collect} on loopback appending to C{store}; return it and its port."""
        collector = self.start("collect", "--listen", LOOPBACK, "--store", str(store))
        return collector, collector.wait_port(LOOPBACK)

    def start_reporter(self, port: int) -> Twistd:
        """Start C{report} with simulated pins, sending every 0.2 s to C{port}."""
        return self.start(
            "report", "--gpio", "sim", "--interval", "0.2", "--protocol", "1",
            "--connect", f"tcp:host=127.0.0.1:port={port}",
        )  # fmt: skip

    def assertWellFormed(self, records: list[dict]) -> None:
        """Each record has exactly time, peer, message; times are UTC and never go back."""
        times = []
        for record in records:
            self.assertEqual(sorted(record), ["message", "peer", "time"], record)
            self.assertRegex(record["time"], UTC_ISO)
            moment = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
            self.assertEqual(moment.utcoffset(), timezone.utc.utcoffset(None), record)
            self.assertRegex(record["peer"], r"^127\.0\.0\.1:\d+$")
            times.append(moment)
        self.assertEqual(times, sorted(times), records)


class ReportToCollectTests(_CollectorTestMixin, SynchronousTestCase):
    """C{report --gpio sim} sending to C{collect --store ...}."""

    def run_report_to_collect(self, store: Path, wait) -> tuple[list[dict], str]:
        """
        Run a reporter against a collector until C{wait(collector)} is true, stop
        both cleanly (reporter first), and return the store's records and the
        collector's log.
        """
        collector, port = self.start_collector(store)
        reporter = self.start_reporter(port)
        wait_until(lambda: wait(collector), describe=lambda: collector.log() + reporter.log())
        reporter.stop_cleanly()
        log = collector.stop_cleanly()
        return read_store(store), log

    def assertReportedByOnePeer(self, records: list[dict], collector_log: str) -> None:
        self.assertGreaterEqual(len(records), 3, records)
        self.assertWellFormed(records)
        self.assertEqual({r["message"] for r in records}, {RELEASED}, records)
        connected = re.findall(r"Reporter connected from (\S+)", collector_log)
        self.assertEqual(len(connected), 1, collector_log)
        self.assertEqual({r["peer"] for r in records}, {connected[0]}, records)

    def test_jsonl(self) -> None:
        """Every 0.2 s report of the released button becomes a JSON line with UTC time and peer."""
        store = self.store_path("readings.jsonl")
        records, log = self.run_report_to_collect(store, lambda _: len(read_jsonl(store)) >= 3)
        self.assertReportedByOnePeer(records, log)

    def test_sqlite(self) -> None:
        """Reports become rows of the C{readings} table; every message logged as stored is there."""
        store = self.store_path("readings.sqlite")
        records, log = self.run_report_to_collect(
            store, lambda collector: len(stored_messages(collector)) >= 3
        )
        self.assertReportedByOnePeer(records, log)
        logged = STORED_LINE.findall(log)
        self.assertEqual(
            [(r["peer"], r["message"]) for r in records[: len(logged)]], logged, records
        )


class CutOffReporterTests(_CollectorTestMixin, SynchronousTestCase):
    """A reporter whose connection ends in the middle of a message."""

    def assertPartialMessageDropped(self, reset: bool) -> None:
        store = self.store_path("readings.jsonl")
        collector, port = self.start_collector(store)
        cut = connect_tcp(port)
        self.addCleanup(cut.close)
        cut_peer = peer_of(cut)
        cut.sendall(b"Button pressed\0Button rel")
        if reset:
            # Let the whole message in first: a reset may discard unread data.
            collector.wait_for(re.escape(f"Message from {cut_peer}: Button pressed"))
            cut.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cut.close()
        # Anything the cut-off connection leaves is handled by the time its end is logged.
        collector.wait_for(re.escape(f"Reporter {cut_peer} disconnected"))
        with connect_tcp(port) as after:
            after_peer = peer_of(after)
            after.sendall(b"after\0")
            wait_until(
                lambda: any(r["message"] == "after" for r in read_jsonl(store)),
                describe=collector.log,
            )
        collector.stop_cleanly()
        records = read_jsonl(store)
        self.assertWellFormed(records)
        self.assertEqual(
            [(r["peer"], r["message"]) for r in records],
            [(cut_peer, "Button pressed"), (after_peer, "after")],
        )

    def test_closed_mid_message(self) -> None:
        """A connection closed after C{Button rel} stores C{Button pressed} and nothing partial."""
        self.assertPartialMessageDropped(reset=False)

    def test_reset_mid_message(self) -> None:
        """A connection reset (SO_LINGER 0) after C{Button rel} stores nothing partial."""
        self.assertPartialMessageDropped(reset=True)


class ConcurrentReportersTests(_CollectorTestMixin, SynchronousTestCase):
    """Several reporters connected to one collector at once."""

    def test_three_raw_reporters_interleaved(self) -> None:
        """Three connections sending halves of messages in turn all get stored under their peers."""
        store = self.store_path("readings.jsonl")
        collector, port = self.start_collector(store)
        socks = [connect_tcp(port) for _ in range(3)]
        for sock in socks:
            self.addCleanup(sock.close)
        expected = {
            peer_of(sock): [f"sensor {name} reading {i}" for i in range(3)]
            for sock, name in zip(socks, "ABC")
        }
        for i in range(3):
            bodies = [f"{expected[peer_of(sock)][i]}\0".encode() for sock in socks]
            for sock, body in zip(socks, bodies):
                sock.sendall(body[:5])
            for sock, body in zip(socks, bodies):
                sock.sendall(body[5:])
        wait_until(lambda: len(read_jsonl(store)) >= 9, describe=collector.log)
        for sock in socks:
            sock.close()
        collector.stop_cleanly()
        records = read_jsonl(store)
        self.assertWellFormed(records)
        self.assertEqual(len(records), 9, records)
        by_peer = {peer: [r["message"] for r in records if r["peer"] == peer] for peer in expected}
        self.assertEqual(by_peer, expected)

    def test_three_report_processes(self) -> None:
        """Three C{report} processes at once are each recorded under their own peer address."""
        store = self.store_path("readings.sqlite")
        collector, port = self.start_collector(store)
        reporters = [self.start_reporter(port) for _ in range(3)]

        def peers_with_two_messages():
            peers = [peer for peer, _ in stored_messages(collector)]
            return {peer for peer in peers if peers.count(peer) >= 2}

        wait_until(lambda: len(peers_with_two_messages()) >= 3, describe=collector.log)
        for reporter in reporters:
            reporter.stop_cleanly()
        log = collector.stop_cleanly()
        records = read_sqlite(store)
        self.assertWellFormed(records)
        self.assertEqual({r["message"] for r in records}, {RELEASED})
        connected = set(re.findall(r"Reporter connected from (\S+)", log))
        self.assertEqual(len(connected), 3, log)
        self.assertEqual({r["peer"] for r in records}, connected)


class RestartTests(_CollectorTestMixin, SynchronousTestCase):
    """Running C{collect} again on the same store."""

    def assertAppendsAcrossRestart(self, name: str) -> None:
        store = self.store_path(name)
        sent = []
        for run in ("first", "second"):
            collector, port = self.start_collector(store)
            with connect_tcp(port) as sock:
                peer = peer_of(sock)
                for i in range(2):
                    message = f"{run} run, message {i}"
                    sock.sendall(message.encode() + b"\0")
                    sent.append((peer, message))
                collector.wait_for(re.escape(f"Message from {peer}: {run} run, message 1"))
            collector.stop_cleanly()
        records = read_store(store)
        self.assertWellFormed(records)
        self.assertEqual([(r["peer"], r["message"]) for r in records], sent)

    def test_jsonl_appends(self) -> None:
        """A restarted collector appends to the JSON Lines file; the first run's lines stay."""
        self.assertAppendsAcrossRestart("readings.jsonl")

    def test_sqlite_appends(self) -> None:
        """A restarted collector appends rows to the SQLite table; the first run's rows stay."""
        self.assertAppendsAcrossRestart("readings.sqlite")


class BadStoreTests(SynchronousTestCase):
    """C{--store} values that cannot work stop C{collect} at once, in one line."""

    def run_collect(self, store: str):
        exited = run_twistd(
            *FOREGROUND, "rpisensor", "collect", "--listen", LOOPBACK, "--store", store
        )
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        return exited

    def test_unknown_suffix(self) -> None:
        """C{--store x.txt} is a usage error whose message names C{--store} and the file."""
        exited = self.run_collect("x.txt")
        message = exited.log.strip().splitlines()[-1]
        self.assertIn("--store", message, exited.log)
        self.assertIn("x.txt", message, exited.log)

    def assertOneLineNamingPath(self, path: str) -> None:
        # The store opens once twistd has started (after daemonizing and --uid),
        # so its log has begun: one line of it says why the store cannot be used.
        exited = self.run_collect(path)
        lines = [line for line in exited.log.splitlines() if "cannot open the store" in line]
        self.assertEqual(len(lines), 1, exited.log)
        self.assertIn(path, lines[0])

    def test_missing_directory_jsonl(self) -> None:
        """A C{.jsonl} store in a missing directory: one line naming it, exit non-zero."""
        self.assertOneLineNamingPath("/nonexistent-dir/x.jsonl")

    def test_missing_directory_sqlite(self) -> None:
        """A C{.sqlite} store in a missing directory: one line naming it, exit non-zero."""
        self.assertOneLineNamingPath("/nonexistent-dir/x.sqlite")
