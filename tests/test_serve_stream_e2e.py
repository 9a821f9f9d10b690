"""
C{twistd -n rpisensor serve --gpio sim} as a real process, with a raw
socket subscriber that speaks the v2 frames by hand: every change is
received once, in order, across a reconnect, as the journal file holds it;
a journal that cannot be used stops C{serve} with one line; C{tac/serve.tac}
takes the journal from C{RPISENSOR_JOURNAL}.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import FOREGROUND, Twistd, connect_tcp, daemon_child_done, request, run_twistd, wait_until
from tests.support import LOOPBACK
from tests.v2_subscriber import RawSubscriber

SERVE_TAC = Path(__file__).resolve().parent.parent / "tac" / "serve.tac"


def status(port: int) -> dict:
    with connect_tcp(port) as sock:
        reply = request(sock, b"status").rstrip(b"\0").decode()
    verb, _, body = reply.partition(" ")
    assert verb == "status", reply
    return json.loads(body)


def toggle(port: int) -> str:
    with connect_tcp(port) as sock:
        return request(sock, b"sim button toggle").rstrip(b"\0").decode()


class SubscribeEndToEndTests(SynchronousTestCase):
    def test_every_change_once_in_order_across_a_reconnect(self) -> None:
        """Toggled by 'sim', seen by a raw subscriber over two connections: exactly the journal file."""
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, "--poll-interval", "0.02")
        self.addCleanup(serve.close)
        port = serve.wait_port()
        wait_until(lambda: status(port)["last"] >= 1, describe=serve.log)  # the first sample
        first = RawSubscriber(port, 0)
        self.addCleanup(first.close)
        self.assertEqual(first.welcome["device"], status(port)["device"])
        expected_last = 1
        for _ in range(5):
            toggle(port)
            expected_last += 1
            wait_until(lambda: status(port)["last"] == expected_last, describe=serve.log)
            first.read_until(expected_last)
        first.close()
        for _ in range(4):  # while the subscriber is away
            toggle(port)
            expected_last += 1
            wait_until(lambda: status(port)["last"] == expected_last, describe=serve.log)
        second = RawSubscriber(port, first.entries[-1]["seq"])
        self.addCleanup(second.close)
        self.assertEqual(second.welcome["stream"], first.welcome["stream"])
        second.read_until(expected_last)
        wait_until(lambda: status(port)["subscriptions"][0]["acked"] == expected_last, describe=serve.log)
        second.close()
        serve.stop_cleanly()

        received = [(e["seq"], e["sensor"], e["value"], e["text"]) for e in first.entries + second.entries]
        with closing(sqlite3.connect(os.path.join(serve.directory, "rpisensor-journal.sqlite"))) as db:
            journal = db.execute("SELECT seq, sensor, value, text FROM entries ORDER BY seq").fetchall()
        self.assertEqual(received, journal)
        self.assertEqual([seq for seq, *_ in received], list(range(1, 11)))
        self.assertEqual([value for _, _, value, _ in received], [0, 1] * 5)
        self.assertEqual({e["stream"] for e in first.entries + second.entries}, {first.welcome["stream"]})

    def test_v1_go_and_subscriber_side_by_side(self) -> None:
        """A tutorial-style 'go' client is answered as ever while a subscriber streams."""
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK)
        self.addCleanup(serve.close)
        port = serve.wait_port()
        wait_until(lambda: status(port)["last"] >= 1, describe=serve.log)
        subscriber = RawSubscriber(port, None)
        self.addCleanup(subscriber.close)
        verb, snapshot = subscriber.next_frame()
        self.assertEqual((verb, snapshot["snapshot"], snapshot["text"]), ("reading", True, "Button released"))
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"go"), b"Button released\0")
            self.assertEqual(request(sock, b"go"), b"Button released\0")
        subscriber.close()
        serve.stop_cleanly()


class JournalStartupTests(SynchronousTestCase):
    def test_unusable_journal_one_line(self) -> None:
        """A journal in a missing directory stops serve with one line naming it, no traceback."""
        exited = run_twistd(
            *FOREGROUND, "rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK,
            "--journal", "/nonexistent-dir/journal.sqlite",
        )  # fmt: skip
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        lines = [line for line in exited.log.splitlines() if "cannot use the journal" in line]
        self.assertEqual(len(lines), 1, exited.log)
        self.assertIn("/nonexistent-dir/journal.sqlite", lines[0])
        self.assertIn("--journal none", lines[0])

    def test_daemon_reports_it(self) -> None:
        """In the background, twistd's parent exits non-zero naming the journal, and leaves no pid file."""
        directory = Path(self.mktemp())
        directory.mkdir()
        exited = run_twistd(
            "--logfile=twistd.log", "--pidfile=serve.pid", "rpisensor", "serve", "--gpio", "sim",
            "--listen", LOOPBACK, "--journal", "/nonexistent-dir/journal.sqlite", cwd=str(directory),
        )  # fmt: skip
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertIn("cannot use the journal", exited.log)
        log = daemon_child_done(directory / "serve.pid", directory / "twistd.log", "cannot use the journal")
        self.assertIn("/nonexistent-dir/journal.sqlite", log)
        self.assertNotIn("Traceback", log)

    def test_memory_journal(self) -> None:
        """--journal none keeps no file, and still streams."""
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, "--journal", "none")
        self.addCleanup(serve.close)
        port = serve.wait_port()
        wait_until(lambda: status(port)["last"] >= 1, describe=serve.log)
        self.assertIsNone(status(port)["journal"])
        subscriber = RawSubscriber(port, 0)
        self.addCleanup(subscriber.close)
        subscriber.read_until(1)
        subscriber.close()
        serve.stop_cleanly()
        self.assertEqual([f for f in os.listdir(serve.directory) if "journal" in f], [])


class ServeTacJournalTests(SynchronousTestCase):
    def test_journal_from_the_environment(self) -> None:
        """tac/serve.tac keeps its journal where RPISENSOR_JOURNAL says."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        journal = directory / "changes.sqlite"
        serve = Twistd(
            "-y", str(SERVE_TAC),
            env={"RPISENSOR_LISTEN": LOOPBACK, "RPISENSOR_GPIO": "sim", "RPISENSOR_JOURNAL": str(journal)},
        )  # fmt: skip
        self.addCleanup(serve.close)
        port = serve.wait_port()
        wait_until(lambda: status(port)["last"] >= 1, describe=serve.log)
        self.assertEqual(status(port)["journal"], str(journal))
        serve.stop_cleanly()
        self.assertTrue(journal.is_file())
