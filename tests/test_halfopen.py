"""
A half-open link, for real: C{report} and C{collect} run as real C{twistd}
processes in two network namespaces joined by a veth pair. Then the
collector's side drops every packet (C{iptables -A INPUT -j DROP}), as when
a NAT forgets the link or the PC loses power: no FIN, no RST. The reporter
must notice within its C{--dead-peer-timeout}, and reconnect once the path
is back.

The same path carries the exactly-once stream (protocol v2) through a
blackhole and a downed link, and the store must end with every reading once.

Needs root, C{ip} (iproute2) and C{iptables}; skipped, saying which is
missing, otherwise. Every wait is for a log line (L{tests.processes.DEADLINE}
each); nothing asserts a duration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.processes import Twistd, wait_until
from tests.test_exactly_once import DEVICE, drain_outbox, gaps, outbox_last, reporter_status, stored

#: The collector's address inside its namespace, and the reporter's.
COLLECTOR_IP = "10.213.0.2"
REPORTER_IP = "10.213.0.1"
PORT = 22000
#: What the reporter logs when its watch gives up on the collector.
DEAD_LINE = re.compile(r"No answer from \S+: .*The link looks dead")
CONNECTED_LINE = re.compile(r"Reporter connected from (\S+)")
STORED_LINE = re.compile(r"\] Message from (\S+): Button released")


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _missing() -> str | None:
    """Why this machine cannot run the test, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root, to create network namespaces"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"needs the {tool} command (apt-get install {package})"
    return None


class Namespaces:
    """Two network namespaces joined by a veth pair, with unique names; deleted by L{delete}."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.reporter = f"rps-r-{tag}"
        self.collector = f"rps-c-{tag}"
        self.created: list[str] = []

    def create(self) -> None:
        for name in (self.reporter, self.collector):
            self._ip("netns", "add", name)
            self.created.append(name)
        tag = self.reporter[-8:]
        self._ip("link", "add", f"vr{tag}", "netns", self.reporter,
                 "type", "veth", "peer", "name", f"vc{tag}", "netns", self.collector)  # fmt: skip
        for name, device, address in (
            (self.reporter, f"vr{tag}", REPORTER_IP),
            (self.collector, f"vc{tag}", COLLECTOR_IP),
        ):
            self._ip("-n", name, "addr", "add", f"{address}/30", "dev", device)
            self._ip("-n", name, "link", "set", device, "up")
            self._ip("-n", name, "link", "set", "lo", "up")

    def _ip(self, *args: str) -> None:
        done = _run("ip", *args)
        if done.returncode != 0:
            raise SkipTest(f"cannot set up network namespaces here: ip {' '.join(args)}: {done.stderr.strip()}")

    def exec(self, name: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", name)

    def iptables(self, *args: str) -> None:
        done = _run(*self.exec(self.collector), "iptables", *args)
        if done.returncode != 0:
            raise SkipTest(f"iptables does not work in a namespace here: {done.stderr.strip()}")

    def link(self, namespace: str, device: str, state: str) -> None:
        """Take C{device} in C{namespace} C{"down"} (the cable pulled) or C{"up"}."""
        self._ip("-n", namespace, "link", "set", device, state)

    def delete(self) -> None:
        for name in reversed(self.created):  # deleting a namespace deletes its end of the veth pair
            _run("ip", "netns", "delete", name)


class NamespacesTestCase(SynchronousTestCase):
    """A test on a fresh pair of namespaces, deleted after it."""

    def setUp(self) -> None:
        missing = _missing()
        if missing:
            raise SkipTest(missing)
        self.net = Namespaces()
        self.addCleanup(self.net.delete)
        self.net.create()


class HalfOpenLinkTests(NamespacesTestCase):

    def start(self, namespace: str, *args: str) -> Twistd:
        twistd = Twistd("rpisensor", *args, wrapper=self.net.exec(namespace))
        self.addCleanup(twistd.close)
        return twistd

    def test_reporter_notices_a_vanished_collector_and_comes_back(self) -> None:
        """
        With the collector blackholed mid-stream, the reporter declares the link dead (its watch
        sees the data go unacknowledged), keeps trying, and reconnects when the path is back.
        """
        collector = self.start(self.net.collector, "collect", "--listen", f"tcp:{PORT}:interface={COLLECTOR_IP}")
        collector.wait_listening()
        reporter = self.start(
            self.net.reporter, "report", "--gpio", "sim", "--interval", "0.2", "--protocol", "1",
            "--dead-peer-timeout", "2", "--max-delay", "2",
            "--connect", f"tcp:host={COLLECTOR_IP}:port={PORT}:timeout=3",
        )  # fmt: skip
        first = collector.wait_for(CONNECTED_LINE).group(1)
        collector.wait_for(STORED_LINE)

        self.net.iptables("-A", "INPUT", "-j", "DROP")
        reporter.wait_for(DEAD_LINE)
        self.assertNotIn("Traceback", reporter.log())

        self.net.iptables("-D", "INPUT", "-j", "DROP")
        again = collector.wait_for(rf"Reporter connected from (?!{re.escape(first)}\b)(\S+)").group(1)
        collector.wait_for(rf"\] Message from {re.escape(again)}: Button released")
        reporter.stop_cleanly()
        collector.stop_cleanly()


class StreamAcrossABlackholeTests(NamespacesTestCase):
    """
    The exactly-once stream (protocol v2) across a real network path that fails twice:
    blackholed by iptables (half-open: no FIN, no RST), then the link taken down. Every
    reading the reporter took must be in the collector's store once, in order.
    """

    def setUp(self) -> None:
        super().setUp()
        self.pi = Path(tempfile.mkdtemp(prefix="rpisensor-pi-"))
        self.pc = Path(tempfile.mkdtemp(prefix="rpisensor-pc-"))
        self.addCleanup(shutil.rmtree, self.pi, True)
        self.addCleanup(shutil.rmtree, self.pc, True)
        self.store = self.pc / "readings.sqlite"

    def start(self, namespace: str, *args: str, cwd: Path) -> Twistd:
        twistd = Twistd("rpisensor", *args, wrapper=self.net.exec(namespace), cwd=str(cwd))
        self.addCleanup(twistd.close)
        return twistd

    def start_reporter(self, pattern: bool = True) -> Twistd:
        return self.start(
            self.net.reporter, "report", "--gpio", "sim", "--device", DEVICE, "--protocol", "2",
            "--on-change", "--dead-peer-timeout", "3", "--max-delay", "2",
            *(("--sim-pattern", "button=0.15,0.15") if pattern else ()),
            "--connect", f"tcp:host={COLLECTOR_IP}:port={PORT}:timeout=3", cwd=self.pi,
        )  # fmt: skip

    def grows(self, by: int = 3) -> None:
        before = len(stored(self.store))
        wait_until(lambda: len(stored(self.store)) >= before + by, describe=self.logs)

    def dropped(self, reporter: Twistd) -> None:
        """Wait until the reporter gives up the connection it has now (its dead-peer watch fires)."""
        before = reporter.log().count("Disconnected from")
        wait_until(lambda: reporter.log().count("Disconnected from") > before, describe=self.logs)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{t.log()[-6000:]}" for name, t in self.running.items())

    def status(self) -> str:
        return reporter_status(self.pi)

    def test_every_reading_once_across_a_blackhole_and_a_downed_link(self) -> None:
        collector = self.start(
            self.net.collector, "collect", "--listen", f"tcp:{PORT}:interface={COLLECTOR_IP}",
            "--store", str(self.store), cwd=self.pc,
        )  # fmt: skip
        collector.wait_listening()
        reporter = self.start_reporter()
        self.running = {"reporter": reporter, "collector": collector}
        self.grows(5)

        self.net.iptables("-A", "INPUT", "-j", "DROP")
        self.dropped(reporter)
        self.net.iptables("-D", "INPUT", "-j", "DROP")
        self.grows()

        device = f"vc{self.net.reporter[-8:]}"
        self.net.link(self.net.collector, device, "down")
        self.dropped(reporter)
        self.net.link(self.net.collector, device, "up")
        self.grows()

        reporter.stop_cleanly()  # no more presses; the last runs send what is left

        def quiet() -> Twistd:
            self.running["reporter"] = self.start_reporter(pattern=False)
            return self.running["reporter"]

        drain_outbox(quiet, self.pi, lambda: f"{self.status()}\n{self.logs()}")
        collector.stop_cleanly()

        readings = stored(self.store)
        seqs = [seq for _, seq, _ in readings]
        last = outbox_last(self.pi / "rpisensor-outbox.sqlite")
        self.assertEqual(len({stream for stream, _, _ in readings}), 1)
        self.assertEqual(seqs, list(range(1, last + 1)))  # every entry, once, in order
        values = [value for _, _, value in readings]
        self.assertEqual([i for i in range(1, len(values)) if values[i] == values[i - 1]], [])
        self.assertEqual(gaps(self.store), [])
