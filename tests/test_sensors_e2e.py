"""
End to end, measurement sensors on a fake sysfs tree (C{--sysfs-root}):
C{twistd rpisensor serve} answering C{rpisensor query ... "read temp"} and
streaming the value with its unit to a subscriber; C{report} to C{collect}
storing it with its unit (v2) or its text (v1, as DataServer3 would get it).

Real processes, loopback only; every wait is for a condition.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from rpisensor.testing import stored_messages, stored_stream
from rpisensor.wire import v2
from tests.processes import Twistd, connect_tcp, read_reply, wait_until
from tests.support import LOOPBACK
from tests.test_measure import GOOD, W1_ID, FakeSysfs
from tests.test_query import endpoint, run_rpisensor


class _Sensors:
    def fake_tree(self) -> Path:
        tree = FakeSysfs(Path(os.path.abspath(self.mktemp())))
        tree.write(f"bus/w1/devices/{W1_ID}/w1_slave", GOOD)
        return tree.root

    def start(self, *args: str) -> Twistd:
        twistd = Twistd("rpisensor", *args)
        self.addCleanup(twistd.close)
        return twistd


class ServeSensorTests(_Sensors, SynchronousTestCase):
    def test_read_temp_with_query(self) -> None:
        """rpisensor query ... "read temp": the DS18B20's value and unit; list and go beside it."""
        serve = self.start(
            "serve", "--gpio", "sim", "--listen", LOOPBACK, "--journal", "none",
            "--sysfs-root", str(self.fake_tree()), "--sensor", f"temp=w1:{W1_ID}",
        )  # fmt: skip
        port = serve.wait_port(LOOPBACK)
        serve.wait_for(rf"Measuring temp \(w1:{W1_ID}, °C, every 10 s\)")
        result = run_rpisensor("query", endpoint(port), "read temp", "list", "go")
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertEqual(result.stdout.splitlines(), ["22.56 °C", "button temp(w1,°C)", "Button released"])
        sock = connect_tcp(port)
        self.addCleanup(sock.close)
        sock.sendall(b"subscribe\0")
        temp = None
        received = b""
        while temp is None:  # the snapshot: each input's and sensor's latest reading
            received += read_reply(sock)
            frames = [v2.parse(body.decode()) for body in received.split(b"\0")[:-1]]
            temp = next((f for f in frames if isinstance(f, v2.Reading) and f.sensor == "temp"), None)
        self.assertEqual((temp.value, temp.unit, temp.text, temp.snapshot), (22.562, "°C", "22.56 °C", True))
        sock.close()
        serve.stop_cleanly()


class ReportCollectTests(_Sensors, SynchronousTestCase):
    def report_to_collect(self, store: str, *report_args: str) -> None:
        collect = self.start("collect", "--listen", LOOPBACK, "--store", store)
        port = collect.wait_port(LOOPBACK)
        self.start(
            "report", "--gpio", "sim", "--connect", f"tcp:host=127.0.0.1:port={port}", "--outbox", "none",
            "--status-listen", "none", "--sysfs-root", str(self.fake_tree()),
            "--sensor", f"temp=w1:{W1_ID},interval=1", *report_args,
        )  # fmt: skip

    def test_v2_stores_the_unit(self) -> None:
        """report -> collect: the measurement stored once, its number as value, with its unit (an SQLite column)."""
        store = os.path.abspath(self.mktemp()) + ".sqlite"
        self.report_to_collect(store)
        wait_until(lambda: any(r.sensor == "temp" for r in stored_stream(store)))
        temp = next(r for r in stored_stream(store) if r.sensor == "temp")
        self.assertEqual((temp.value, temp.unit, temp.text), (22.562, "°C", "22.56 °C"))
        with closing(sqlite3.connect(store)) as db:
            row = db.execute("SELECT value, unit, message FROM readings WHERE sensor = 'temp' LIMIT 1").fetchone()
        self.assertEqual(row, (22.562, "°C", "22.56 °C"))
        button = next(r for r in stored_stream(store) if r.sensor == "button")
        self.assertEqual((button.value, button.unit), (0, None))

    def test_v2_jsonl_has_the_unit_key(self) -> None:
        store = os.path.abspath(self.mktemp()) + ".jsonl"
        self.report_to_collect(store)
        wait_until(lambda: os.path.exists(store) and any(r.sensor == "temp" for r in stored_stream(store)))
        temp = next(r for r in stored_stream(store) if r.sensor == "temp")
        self.assertEqual((temp.value, temp.unit), (22.562, "°C"))

    def test_v1_sends_the_text(self) -> None:
        """report --protocol 1 (the tutorial's plain text): the measurement's text, as read NAME answers."""
        store = os.path.abspath(self.mktemp()) + ".sqlite"
        self.report_to_collect(store, "--protocol", "1")
        wait_until(lambda: "22.56 °C" in stored_messages(store))
        self.assertIn("Button released", stored_messages(store))


class TutorialDemoTests(_Sensors, SynchronousTestCase):
    def test_sensors_demo(self) -> None:
        """The sensors tutorial's demo, run as written (only the port is a free loopback one), prints what it says."""
        from tests.processes import free_port
        from tests.test_readme import ROOT, example

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port = free_port()
        lines = [line for line in example("sensors-demo", "docs/tutorial/sensors.md").splitlines() if line.strip()]
        serve_line = next(line for line in lines if line.startswith("twistd -n rpisensor "))
        query_line = next(line for line in lines if line.startswith("rpisensor query "))
        for line in lines:
            if line not in (serve_line, query_line):
                subprocess.run(["bash", "-e", "-c", line], cwd=directory, check=True)
        serve = Twistd(*shlex.split(serve_line)[2:], "--listen", f"tcp:{port}:interface=127.0.0.1", cwd=directory)
        self.addCleanup(serve.close)
        serve.wait_port()
        query = shlex.split(query_line.split("#")[0].replace("127.0.0.1:22000", f"127.0.0.1:{port}"))
        result = run_rpisensor(*query[1:])
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        said = re.search(r"prints `([^`]*)`, `([^`]*)` and `([^`]*)`", (ROOT / "docs/tutorial/sensors.md").read_text(encoding="utf-8"))
        self.assertEqual(result.stdout.splitlines(), list(said.groups()))
        serve.stop_cleanly()
