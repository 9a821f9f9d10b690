"""
Experiment 3 as a user runs it, with everything that goes wrong going wrong: a real
C{twistd report} (simulated button pressed and released by itself) sends, through a fault
proxy, to a real C{twistd collect} with an SQLite store. The link is cut with RST and with
FIN, goes silent (half-open: nothing forwarded, nothing closed), the reporter is killed with
SIGKILL and stopped with SIGTERM, the collector is killed with SIGKILL, each restarted.

Then the store must hold every reading the reporter took, exactly once, in order: the seqs
1..N of its stream with no hole and no repeat, N being the last entry of the reporter's
outbox; and, since the reporter records changes only, values that alternate (a lost reading
would show as two equal values in a row). Every wait is for a condition; nothing is timed.
"""

from __future__ import annotations

import signal
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.faultproxy import FaultProxy
from tests.processes import Twistd, connect_unix, request, wait_until
from tests.support import LOOPBACK

DEVICE = "greenhouse"


def stored(path: Path) -> list[tuple[str, int, int]]:
    """(stream, seq, value) of every v2 reading in the store, in the order they were stored."""
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            rows = db.execute(
                "SELECT stream, seq, value FROM readings WHERE device = ? ORDER BY id", (DEVICE,)
            ).fetchall()
        except sqlite3.OperationalError:  # the collector has not made its tables yet
            return []
    return [(stream, seq, int(value)) for stream, seq, value in rows]


def gaps(path: Path) -> list[tuple]:
    with closing(sqlite3.connect(path, timeout=30)) as db:
        return db.execute("SELECT from_seq, to_seq, reason FROM gaps").fetchall()


def outbox_last(path: Path) -> int:
    """The last entry the reporter's outbox holds (it keeps its newest entry, acknowledged or not)."""
    with closing(sqlite3.connect(path, timeout=30)) as db:
        (last,) = db.execute("SELECT MAX(COALESCE(last, seq)) FROM entries").fetchone()
    return last or 0


def unacknowledged(path: Path) -> int:
    """Entries of a stopped reporter's outbox that no collector acknowledged."""
    with closing(sqlite3.connect(path, timeout=30)) as db:
        (acked,) = db.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone() or (0,)
        (last,) = db.execute("SELECT max(COALESCE(last, seq)) FROM entries").fetchone()
    return max(0, (last or 0) - int(acked))


def drain_outbox(start: Callable[[], Twistd], directory: Path, describe: Callable[[], str]) -> None:
    """
    Run a reporter without presses (C{start()} starts it in C{directory}) until its outbox is
    acknowledged whole, then stop it. Its status can say C{outbox=0} before it took its first
    reading (the input's state when it starts, where that differs from the last one recorded),
    which a stop right then leaves unacknowledged: then it runs again.
    """
    for _ in range(5):
        reporter = start()
        wait_until(lambda: " outbox=0 " in reporter_status(directory), describe=describe)
        reporter.stop_cleanly()
        if unacknowledged(directory / "rpisensor-outbox.sqlite") == 0:
            return
    raise AssertionError(f"the outbox was never acknowledged whole:\n{describe()}")


def reporter_status(directory: Path) -> str:
    """The status line of the reporter working in C{directory}, or why there is none yet (it is starting)."""
    try:
        with connect_unix(str(directory / "rpisensor-report.sock")) as sock:
            return request(sock, b"status").rstrip(b"\0").decode()
    except OSError as e:
        return f"no status yet: {e}"


class ExactlyOnceTests(SynchronousTestCase):
    """With --protocol 2: the reporter only ever speaks the stream."""

    protocol = "2"
    #: What the reporter's log says when a frozen collector does not answer its hello in time.
    no_answer = "does not speak rpisensor v2"

    def setUp(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="rpisensor-once-"))
        self.pi = self.scratch / "pi"
        self.pc = self.scratch / "pc"
        self.pi.mkdir()
        self.pc.mkdir()
        self.store = self.pc / "readings.sqlite"
        self.collector = self.reporter = None
        self.proxy: FaultProxy | None = None

    def tearDown(self) -> None:
        for twistd in (self.reporter, self.collector):
            if twistd is not None:
                twistd.close()
        if self.proxy is not None:
            self.proxy.close()

    def start_collector(self) -> int:
        self.collector = Twistd(
            "rpisensor", "collect", "--listen", LOOPBACK, "--store", str(self.store), cwd=str(self.pc)
        )
        return self.collector.wait_port()

    def start_reporter(self, pattern: bool = True) -> Twistd:
        self.reporter = Twistd(
            "rpisensor", "report", "--connect", f"127.0.0.1:{self.proxy.port}", "--gpio", "sim",
            "--device", DEVICE, "--protocol", self.protocol, "--on-change", "--interval", "0.05",
            "--dead-peer-timeout", "3", "--max-delay", "2",
            *(("--sim-pattern", "button=0.15,0.15") if pattern else ()),
            cwd=str(self.pi),
        )  # fmt: skip
        return self.reporter

    def grows(self, by: int = 3) -> None:
        """Wait until the store has C{by} more readings than now: the link works again."""
        before = len(stored(self.store))
        wait_until(lambda: len(stored(self.store)) >= before + by, describe=self.logs)

    def logs(self) -> str:
        parts = []
        for name, twistd in (("reporter", self.reporter), ("collector", self.collector)):
            if twistd is not None:
                parts.append(f"--- {name}\n{twistd.log()[-6000:]}")
        return "\n".join(parts)

    def status(self) -> str:
        return reporter_status(self.pi)

    def test_every_reading_once_in_order(self) -> None:
        """Cuts, a half-open link, a killed and a stopped reporter, a killed collector: nothing lost, nothing twice."""
        port = self.start_collector()
        self.proxy = FaultProxy(port)
        self.start_reporter()
        self.grows(5)

        self.proxy.cut("rst")
        self.grows()
        self.proxy.cut("fin")
        self.grows()

        self.proxy.silence()  # half-open: the reporter's heartbeat watch must notice
        self.reporter.wait_for(r"not even a heartbeat: the link looks dead", timeout=60)
        self.proxy.restore()
        self.grows()

        self.reporter.process.send_signal(signal.SIGKILL)
        self.reporter.process.wait()
        self.reporter.close()
        self.start_reporter()
        self.grows()

        self.collector.process.send_signal(signal.SIGKILL)
        self.collector.process.wait()
        self.collector.close()
        self.proxy.target_port = self.start_collector()
        self.proxy.cut("rst")  # links to the dead collector's port are gone anyway
        self.grows()

        # A collector that stops answering (frozen: its first reply after the reconnect comes
        # seconds late, as over a lossy link): the reporter's hello times out meanwhile.
        self.collector.process.send_signal(signal.SIGSTOP)
        try:
            self.proxy.cut("rst")
            self.reporter.wait_for(self.no_answer, timeout=60)
        finally:
            self.collector.process.send_signal(signal.SIGCONT)
        self.grows()

        self.reporter.stop_cleanly()
        self.start_reporter()
        self.grows()

        # The end: no more presses; wait until the collector has all the reporter took.
        self.reporter.stop_cleanly()
        drain_outbox(lambda: self.start_reporter(pattern=False), self.pi, lambda: f"{self.status()}\n{self.logs()}")
        self.collector.stop_cleanly()

        readings = stored(self.store)
        streams = {stream for stream, _, _ in readings}
        self.assertEqual(len(streams), 1, streams)  # one outbox, one stream, across every restart
        seqs = [seq for _, seq, _ in readings]
        last = outbox_last(self.pi / "rpisensor-outbox.sqlite")
        self.assertEqual(sorted(seqs), list(range(1, last + 1)))  # every entry, none twice
        self.assertEqual(seqs, sorted(seqs))  # stored in order
        values = [value for _, _, value in readings]
        repeats = [i for i in range(1, len(values)) if values[i] == values[i - 1]]
        self.assertEqual(repeats, [], f"equal values in a row at {repeats}: a change went missing")
        self.assertEqual(gaps(self.store), [])
        self.assertGreater(last, 10)


class ExactlyOnceByDefaultTests(ExactlyOnceTests):
    """
    The same in the default mode (--protocol auto), which offers the stream and
    speaks plain text to a server that does not answer: a late answer must cost
    nothing (it used to let the whole outbox go, and the collector recorded a gap).
    """

    protocol = "auto"
    no_answer = "so it gets plain text"
