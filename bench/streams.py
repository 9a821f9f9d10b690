#!/usr/bin/env python3
"""
The event streams' benchmark (protocol v2: report -> collect), one command,
one table:

    .venv/bin/python bench/streams.py            # full sizes, about 2.5 minutes
    .venv/bin/python bench/streams.py --quick    # every scenario at tiny sizes (CI)

Four scenarios, each against real twistd processes on 127.0.0.1 (the
collector pinned to CPU 0; the reporter, the load generator and this script
to CPU 1, when the machine has two):

  C1 catch-up: 100,000 readings waiting in a reporter's outbox while the
     collector is away; the collector comes up: time until all are stored and
     acknowledged.
  C2 steady state on the Pi side, 10 readings/s: bytes written to disk and
     syncs per second of the reporter (/proc/PID/io, strace -c).
  C3 latency from a (simulated) pin change to the collector's durable commit.
  C4 ingest: 200 reporters at 10 readings/s into one collector, every reading
     acknowledged; the collector's CPU.

See bench/README.md ("The event streams") for the method. Exits non-zero when
the bench itself fails (a process does not start, a reading is missing or
doubled, an ack is wrong); a missed goal is reported, never enforced. Raw
results go to bench/build/streams-results.json, logs to bench/build/logs-streams/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402 (bench/run.py: the same environment helpers)
    BENCH_FAILURES,
    ROOT,
    BenchError,
    bench_failed,
    chosen_scenarios,
    ensure_interpreter,
    fmt,
    machine_busy_seconds,
    pinned,
    plan_cpus,
    proc_cpu_seconds,
    render,
    run_each,
)

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
WORK = BUILD / "streams"
LOGS = BUILD / "logs-streams"
PEERS = HERE / "peers"
PYTHON = sys.executable
TWISTD = str(Path(sys.executable).parent / "twistd")


@dataclass
class Config:
    c1_readings: int
    c1_reps: int
    c2_warmup: float
    c2_window: float
    c3_duration: float
    c4_reporters: int
    c4_rate: float
    c4_duration: float


FULL = Config(c1_readings=100_000, c1_reps=3, c2_warmup=5.0, c2_window=30.0, c3_duration=60.0,
              c4_reporters=200, c4_rate=10.0, c4_duration=30.0)  # fmt: skip
QUICK = Config(c1_readings=2_000, c1_reps=1, c2_warmup=1.0, c2_window=2.0, c3_duration=3.0,
               c4_reporters=10, c4_rate=10.0, c4_duration=2.0)  # fmt: skip

#: The reporters' sampling interval in C2 and C3: 10 readings/s.
INTERVAL = 0.1
#: C1's goal (issue 19): readings/s stored and acknowledged in a catch-up.
C1_GOAL = 100_000
#: C3's simulated button: pressed 137 ms, released 173 ms, over and over. The
#: period (310 ms) is not a multiple of the sampling interval, so the changes
#: fall at every phase of it; each level holds longer than the interval, so
#: every change is sampled.
PATTERN = (0.137, 0.173)

SERVER_CPU: int | None = None
CLIENT_CPU: int | None = None
#: --collector-from / --reporter-from: another checkout whose rpisensor package those processes import.
CODE_FROM: dict[str, str] = {}


# ---------------------------------------------------------------- processes

_running: list[subprocess.Popen] = []


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def start(name: str, command: list[str], cwd: Path, cpu: int | None, env: dict | None = None) -> Proc:
    side = "collector" if "-collect" in name else "reporter"
    if side in CODE_FROM:
        env = {**(env or {}), "PYTHONPATH": CODE_FROM[side]}
    log = LOGS / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            preexec_fn=pinned(cpu), env={**os.environ, **(env or {})},
        )  # fmt: skip
    _running.append(popen)
    return Proc(name, popen, log)


def stop(proc: Proc, grace: float = 10.0) -> None:
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
    if proc.popen in _running:
        _running.remove(proc.popen)


def stop_all() -> None:
    for popen in list(_running):
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        _running.remove(popen)


def wait_for(what: str, check, proc: Proc | None = None, timeout: float = 30.0, every: float = 0.01):
    """Poll C{check()} until it returns something true; its value. Fails if C{proc} ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited while waiting for {what} (log {proc.log}):\n{proc.tail()}")
        time.sleep(every)
    tail = f" (log {proc.log}):\n{proc.tail()}" if proc is not None else ""
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}{tail}")


def listening_port(proc: Proc) -> int:
    return int(wait_for(f"{proc.name} to listen",
                        lambda: (m := re.search(r"\(port (\d+)\)", proc.text())) and m.group(1), proc))  # fmt: skip


def free_port() -> int:
    """A port nothing listens on now (for a collector that starts later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collector(name: str, work: Path, port: int = 0) -> Proc:
    return start(name, [
        TWISTD, "-n", "--pidfile=", "rpisensor", "collect",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--store", "store.sqlite",
    ], work, SERVER_CPU)  # fmt: skip


def reporter_args(port: int, device: str, status: str | None, extra: list[str]) -> list[str]:
    return [
        "-n", "--pidfile=", "rpisensor", "report", "--connect", f"tcp:host=127.0.0.1:port={port}",
        "--gpio", "sim", "--protocol", "2", "--device", device, "--outbox", "outbox.sqlite",
        "--status-listen", f"unix:{status}" if status else "none", *extra,
    ]  # fmt: skip


def status(path: str, timeout: float = 5.0) -> dict[str, str] | None:
    """The reporter's status line as key=value pairs, or None if it does not answer yet."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"status\0")
            reply = b""
            while not reply.endswith(b"\0"):
                chunk = s.recv(4096)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    return dict(re.findall(r"(\w+)=(\S+)", reply.decode()))


def io_counters(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Store:
    """The collector's SQLite store, read-only, as another program reads it."""

    def __init__(self, path: Path) -> None:
        wait_for(f"the store {path}", path.exists)
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        wait_for(f"the store's tables in {path}", self._ready)

    def _ready(self) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE name = 'readings_stream'"  # the last made
        return self.db.execute(query).fetchone() is not None

    def high(self, device: str) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM readings WHERE device = ?", (device,)).fetchone()
        return row[0] or 0

    def check_exactly_once(self, device: str, expected: int) -> None:
        total, distinct, low, high = self.db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM readings WHERE device = ?",
            (device,),
        ).fetchone()
        if (total, distinct, low, high) != (expected, expected, 1, expected):
            raise BenchError(
                f"the store holds {total} readings of {device} ({distinct} distinct, seq {low} to {high}); "
                f"expected each of 1 to {expected} once"
            )

    def close(self) -> None:
        self.db.close()


class Usage:
    """CPU of some processes, and of everything else on the machine, between two moments."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_seconds()
        self.cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
        self.main0 = {name: main_thread_cpu_seconds(pid) for name, pid in pids.items()}

    def end(self, own_extra: float = 0.0) -> dict[str, float]:
        """
        % of one CPU per process, its CPU seconds (C{NAME_cpu_s}) and those of
        its main thread, the reactor's (C{NAME_main_cpu_s}; the rest are its
        other threads': a collector's store writer), and C{foreign}: the rest of
        the machine minus C{own_extra} seconds.
        """
        dt = time.monotonic() - self.t0
        used = {name: proc_cpu_seconds(pid) - self.cpu0[name] for name, pid in self.pids.items()}
        foreign = machine_busy_seconds() - self.busy0 - sum(used.values()) - own_extra
        out = {f"{name}_cpu": 100 * u / dt for name, u in used.items()}
        out.update({f"{name}_cpu_s": u for name, u in used.items()})
        out.update({f"{name}_main_cpu_s": main_thread_cpu_seconds(pid) - self.main0[name]
                    for name, pid in self.pids.items()})  # fmt: skip
        out["foreign"] = max(0.0, 100 * foreign / dt)
        return out


def main_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process's main thread (the reactor's), from C{/proc/PID/task/PID/stat}."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fresh(name: str) -> Path:
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


# ---------------------------------------------------------------- C1 catch-up


def fill_outbox(path: Path, count: int) -> str:
    """C{count} readings in a new outbox, through the journal's own API, closed cleanly: its stream id."""
    from rpisensor.entries import Reading
    from rpisensor.stream.journal import Journal
    from rpisensor.wire.v2 import format_timestamp

    journal = Journal(path)
    journal.open()
    start = time.time() - count * INTERVAL
    for base in range(0, count, 5000):
        journal.append([
            Reading(ts=format_timestamp(start + i * INTERVAL), synced=True, sensor="button", value=i % 2, text="Button pressed" if i % 2 else "Button released")
            for i in range(base + 1, min(count, base + 5000) + 1)
        ])  # fmt: skip
    journal.close(clean=True)
    return journal.stream


def c1_once(cfg: Config, rep: int, sockets: Path) -> dict:
    n = cfg.c1_readings
    if n % 2:
        raise BenchError("C1 needs an even count (the last reading then says released, as the pin)")
    work = fresh(f"c1-{rep}")
    fill_outbox(work / "outbox.sqlite", n)
    port = free_port()
    sock = str(sockets / f"c1-{rep}.sock")
    # --on-change and a long interval: the reporter adds nothing of its own (its
    # button reads released, as the outbox's last reading says).
    reporter = start(f"c1-{rep}-report", [TWISTD, *reporter_args(port, "bench-c1", sock, [
        "--on-change", "--interval", "3600"])], work, CLIENT_CPU)  # fmt: skip
    try:
        state = wait_for("the reporter's status", lambda: status(sock), reporter)
        if state.get("connected") != "no" or int(state["outbox"]) != n:
            raise BenchError(f"C1: the reporter should hold {n} readings, disconnected; it says {state}")
        store_collector = collector(f"c1-{rep}-collect", work, port)
        try:
            # The link is back when the collector has the reporter's hello: it logs
            # "resuming after seq 0; N readings to replay".
            wait_for("the reporter to reconnect", lambda: "readings to replay" in store_collector.text(),
                     store_collector, timeout=60.0, every=0.002)  # fmt: skip
            usage = Usage({"collector": store_collector.pid, "reporter": reporter.pid})
            own0 = time.process_time()
            t0 = usage.t0
            store = Store(work / "store.sqlite")
            wait_for("every reading in the store", lambda: store.high("bench-c1") >= n, store_collector,
                     timeout=300.0, every=0.01)  # fmt: skip
            t_stored = time.monotonic()
            wait_for("the last ack", lambda: (s := status(sock)) and s["outbox"] == "0", reporter,
                     timeout=60.0, every=0.005)  # fmt: skip
            t_acked = time.monotonic()
            cpu = usage.end(own_extra=time.process_time() - own0)
            store.check_exactly_once("bench-c1", n)
            store.close()
        finally:
            stop(store_collector)
    finally:
        stop(reporter)
    return {
        "seconds": t_acked - t0,
        "stored_s": t_stored - t0,
        "rate": n / (t_acked - t0),
        # CPU per reading, and what one CPU of its own would allow at that cost
        "collector_us": 1e6 * cpu["collector_cpu_s"] / n,
        "reporter_us": 1e6 * cpu["reporter_cpu_s"] / n,
        # the collector's reactor thread, and its other threads (the store's writer)
        "collector_reactor_us": 1e6 * cpu["collector_main_cpu_s"] / n,
        "collector_writer_us": 1e6 * (cpu["collector_cpu_s"] - cpu["collector_main_cpu_s"]) / n,
        **cpu,
    }


def c1(cfg: Config, sockets: Path) -> dict:
    runs = [c1_once(cfg, rep, sockets) for rep in range(cfg.c1_reps)]
    best = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    best["runs"] = runs
    return best


# ---------------------------------------------------------------- C2 steady state


def strace_syncs(pid: int, window: float, out: Path) -> tuple[float, int | None, str | None]:
    """
    Count fsync/fdatasync of every thread of C{pid} for C{window} seconds with
    C{strace -c}: (seconds counted, calls or None, why not).
    """
    if shutil.which("strace") is None:
        return window, None, "strace is not installed (apt-get install strace)"
    errors = out.with_suffix(".err")
    with open(errors, "wb") as err:
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-e", "trace=fsync,fdatasync", "-o", str(out), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pinned(CLIENT_CPU),
        )  # fmt: skip
    try:
        wait_for("strace to attach", lambda: b"attached" in errors.read_bytes() or tracer.poll() is not None,
                 timeout=10.0)  # fmt: skip
        if tracer.poll() is not None:
            return window, None, f"strace could not attach: {errors.read_text(errors='replace').strip()[:200]}"
        t0 = time.monotonic()
        time.sleep(window)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
        seconds = time.monotonic() - t0
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait()
    calls = 0
    for line in out.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync"):
            calls += int(fields[3])
    return seconds, calls, None


def c2(cfg: Config, sockets: Path) -> dict:
    work = fresh("c2")
    store_collector = collector("c2-collect", work)
    try:
        port = listening_port(store_collector)
        reporter = start("c2-report", [TWISTD, *reporter_args(port, "bench-c2", None, [
            "--interval", f"{INTERVAL:g}"])], work, CLIENT_CPU)  # fmt: skip
        try:
            store = Store(work / "store.sqlite")
            wait_for("the first reading stored", lambda: store.high("bench-c2") > 0, reporter)
            time.sleep(cfg.c2_warmup)
            io0, high0 = io_counters(reporter.pid), store.high("bench-c2")
            usage = Usage({"reporter": reporter.pid, "collector": store_collector.pid})
            seconds, syncs, why = strace_syncs(reporter.pid, cfg.c2_window, work / "strace.txt")
            io1, high1 = io_counters(reporter.pid), store.high("bench-c2")
            cpu = usage.end()
            dt = time.monotonic() - usage.t0
            store.close()
        finally:
            stop(reporter)
    finally:
        stop(store_collector)
    return {
        "window_s": dt,
        "readings_per_s": (high1 - high0) / dt,
        "write_bytes_per_s": (io1["write_bytes"] - io0["write_bytes"]) / dt,
        "wchar_per_s": (io1["wchar"] - io0["wchar"]) / dt,
        "syscw_per_s": (io1["syscw"] - io0["syscw"]) / dt,
        "syncs_per_s": None if syncs is None else syncs / seconds,
        "syncs": syncs,
        "strace_skipped": why,
        **cpu,
    }


# ---------------------------------------------------------------- C3 latency


def c3(cfg: Config, sockets: Path) -> dict:
    from rpisensor.wire.v2 import parse_timestamp

    work = fresh("c3")
    commits_file = work / "commits.txt"
    timed = start("c3-collect", [TWISTD, "-n", "--pidfile=", "-y", str(PEERS / "timed_collector.tac")], work,
                  SERVER_CPU, env={"BENCH_LISTEN": "tcp:0:interface=127.0.0.1", "BENCH_STORE": "store.sqlite",
                                   "BENCH_COMMITS": str(commits_file)})  # fmt: skip
    try:
        port = listening_port(timed)
        reporter = start("c3-report", [PYTHON, str(PEERS / "rpisensor_pins.py"), *reporter_args(
            port, "bench-c3", None, ["--interval", f"{INTERVAL:g}",
                                     "--sim-pattern", f"button={PATTERN[0]:g},{PATTERN[1]:g}"])],
            work, CLIENT_CPU)  # fmt: skip
        try:
            wait_for("the first commit", lambda: commits_file.exists() and commits_file.stat().st_size, reporter)
            usage = Usage({"collector": timed.pid, "reporter": reporter.pid})
            time.sleep(cfg.c3_duration)
            cpu = usage.end()
            os.kill(reporter.pid, signal.SIGUSR2)
            line = wait_for("the pin history", lambda: re.search(r"BENCH-PINS (\[.*\])\n", reporter.text()), reporter)
            changes = json.loads(line.group(1))
        finally:
            stop(reporter)
    finally:
        stop(timed)
    commits = {}
    for row in commits_file.read_text().split("\n"):
        if row:
            device, seq, when = row.split()
            commits[int(seq)] = float(when)
    db = sqlite3.connect(f"file:{work / 'store.sqlite'}?mode=ro", uri=True)
    readings = [(seq, parse_timestamp(ts).timestamp(), value) for seq, ts, value in db.execute(
        "SELECT seq, ts, value FROM readings WHERE device = 'bench-c3' ORDER BY seq")]  # fmt: skip
    db.close()
    # The button is pulled up and active low: level high = released = value 0.
    latencies, sampling, delivery, unmatched = [], [], [], 0
    first_ts = readings[0][1] if readings else 0
    last_commit = max(commits.values()) if commits else 0
    k = 0
    for when, _channel, high in sorted(changes):
        if when <= first_ts or when >= last_commit - 2 * INTERVAL:
            continue  # before the stream began, or too late to be stored before the end
        value = 0 if high else 1
        while k < len(readings) and readings[k][1] < when - 0.001:  # ts is cut to the millisecond
            k += 1
        j = k
        while j < len(readings) and readings[j][2] != value:
            j += 1
        if j == len(readings) or readings[j][0] not in commits or readings[j][1] - when > 2 * INTERVAL:
            unmatched += 1
            continue
        seq, ts, _ = readings[j]
        latencies.append(1000 * (commits[seq] - when))
        sampling.append(1000 * max(0.0, ts - when))
        delivery.append(1000 * (commits[seq] - ts))
    if not latencies:
        raise BenchError(f"C3: no pin change could be matched to a stored reading ({len(changes)} changes, "
                         f"{len(readings)} readings, {len(commits)} commits)")  # fmt: skip
    return {
        "changes": len(latencies),
        "unmatched": unmatched,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "sampling_p50_ms": percentile(sampling, 0.5),
        "delivery_p50_ms": percentile(delivery, 0.5),
        "delivery_p99_ms": percentile(delivery, 0.99),
        **cpu,
    }


# ---------------------------------------------------------------- C4 ingest


def c4(cfg: Config, sockets: Path) -> dict:
    work = fresh("c4")
    store_collector = collector("c4-collect", work)
    try:
        port = listening_port(store_collector)
        lg = subprocess.Popen(
            [PYTHON, str(PEERS / "stream_loadgen.py"), "--port", str(port), "--reporters", str(cfg.c4_reporters),
             "--rate", f"{cfg.c4_rate:g}", "--duration", f"{cfg.c4_duration:g}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pinned(CLIENT_CPU),
        )  # fmt: skip
        _running.append(lg)
        usage = None
        cpu = {}
        lines = []
        for line in lg.stdout:
            lines.append(line)
            if line.startswith("SENDING"):
                usage = Usage({"collector": store_collector.pid, "loadgen": lg.pid})
            elif line.startswith("SENT") and usage is not None:
                cpu = usage.end()
        lg.wait(60)
        _running.remove(lg)
        try:
            report = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise BenchError(f"C4: the load generator printed no result (exit {lg.returncode}): "
                             f"{''.join(lines)}{lg.stderr.read()}") from None  # fmt: skip
        if lg.returncode != 0:
            raise BenchError(f"C4: the load generator failed (exit {lg.returncode}): {report.get('error')}")
        db = sqlite3.connect(f"file:{work / 'store.sqlite'}?mode=ro", uri=True)
        stored = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT device || ' ' || seq) FROM readings WHERE device LIKE 'bench-r%'"
        ).fetchone()
        db.close()
    finally:
        stop(store_collector)
    if report["acked"] != report["sent"] or stored != (report["sent"], report["sent"]):
        raise BenchError(f"C4: {report['sent']} readings sent, {report['acked']} acknowledged, but the store "
                         f"holds {stored[0]} ({stored[1]} distinct)")  # fmt: skip
    return {**report, "stored": stored[0], **cpu}


SCENARIOS = {"C1": c1, "C2": c2, "C3": c3, "C4": c4}


# ---------------------------------------------------------------- the table


def build_table(res: dict, cfg: Config, judge: bool) -> list[list[str]]:
    rows: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        if not judge:
            return "n/a (quick)"
        return "-" if ok is None else ("met" if ok else "MISSED")

    if "C1" in res:
        r = res["C1"]
        rows.append([f"C1 catch-up, {cfg.c1_readings:,} queued", "readings/s stored and acknowledged",
                     fmt(r["rate"]), f">= {C1_GOAL:,}/s", verdict(r["rate"] >= C1_GOAL),
                     f"{r['seconds']:.2f} s (all stored at {r['stored_s']:.2f} s), median of {cfg.c1_reps}; "
                     f"CPU collector {fmt(r['collector_cpu'], 'pct')} %, {r['collector_us']:.1f} us/reading "
                     f"(reactor {r['collector_reactor_us']:.1f}, writer {r['collector_writer_us']:.1f}; "
                     f"a CPU of its own: {fmt(1e6 / r['collector_us'])}/s), reporter "
                     f"{fmt(r['reporter_cpu'], 'pct')} %, {r['reporter_us']:.1f} us/reading"])  # fmt: skip
    if "C2" in res:
        r = res["C2"]
        kib = r["write_bytes_per_s"] / 1024
        rows.append(["C2 Pi steady state, 10 readings/s", "bytes written to disk/s (write_bytes)",
                     f"{kib:.1f} KiB/s", "<= 16 KiB/s", verdict(kib <= 16),
                     f"{r['readings_per_s']:.1f} readings/s; write() {r['wchar_per_s'] / 1024:.1f} KiB/s in "
                     f"{r['syscw_per_s']:.0f} calls/s; reporter CPU {fmt(r['reporter_cpu'], 'pct')} %"])  # fmt: skip
        syncs = r["syncs_per_s"]
        rows.append(["C2 Pi steady state, 10 readings/s", "fsync + fdatasync calls/s",
                     "-" if syncs is None else f"{syncs:.2f}", "<= 2/s",
                     verdict(None if syncs is None else syncs <= 2),
                     f"skipped: {r['strace_skipped']}" if syncs is None else
                     f"{r['syncs']} in {r['window_s']:.0f} s (strace -c -f)"])  # fmt: skip
    if "C3" in res:
        r = res["C3"]
        goal = INTERVAL * 1000 + 20
        rows.append(["C3 pin change -> durable commit", "p50 / p99 ms",
                     f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}", f"p99 <= {goal:.0f} ms",
                     verdict(r["p99_ms"] <= goal),
                     f"{r['changes']} changes (max {r['max_ms']:.0f} ms); of which waiting for the sample "
                     f"p50 {r['sampling_p50_ms']:.0f} ms, sample -> commit p50 / p99 "
                     f"{r['delivery_p50_ms']:.1f} / {r['delivery_p99_ms']:.1f} ms"])  # fmt: skip
    if "C4" in res:
        r = res["C4"]
        rows.append([f"C4 ingest, {cfg.c4_reporters} reporters x {cfg.c4_rate:g}/s", "all acknowledged; collector CPU %",
                     f"{'yes' if r['all_acked'] else 'no'}; {fmt(r['collector_cpu'], 'pct')} %",
                     "all acked", verdict(bool(r["all_acked"])),
                     f"{r['sent']:,} readings at {fmt(r['readings_per_s'])}/s, all stored once; ack p50 / p99 "
                     f"{r['ack_p50_ms']:.1f} / {r['ack_p99_ms']:.1f} ms; load generator CPU "
                     f"{fmt(r['loadgen_cpu'], 'pct')} %"])  # fmt: skip
    return rows


HEADER = ["scenario", "metric", "result", "goal", "goal met?", "details"]


def notes(res: dict) -> str:
    pinning = (
        f"collectors on CPU {SERVER_CPU}; reporters, the load generator and this script on CPU {CLIENT_CPU}"
        if SERVER_CPU is not None else "no CPU pinning (fewer than 2 CPUs or no sched_setaffinity)"
    )  # fmt: skip
    foreign = {name: r["foreign"] for name, r in res.items() if "foreign" in r}
    lines = [
        f"{pinning}. CPU % is of one CPU.",
        *(f"The {side}s ran the rpisensor package of {where}." for side, where in CODE_FROM.items()),
        "CPU used by other processes on the machine during each measurement (% of one CPU): "
        + (", ".join(f"{name} {v:.0f}" for name, v in foreign.items()) or "-") + ".",
    ]
    busy = [name for name, v in foreign.items() if v > 25]
    if busy:
        lines.append(f"WARNING: other processes used more than 25% of a CPU during {', '.join(busy)}: "
                     "those numbers are disturbed; rerun on a quiet machine.")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> int:
    global SERVER_CPU, CLIENT_CPU
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, goals not judged (CI)")
    parser.add_argument("--only", help="comma-separated scenarios to run, e.g. C1,C3")
    for side in ("collector", "reporter"):
        parser.add_argument(f"--{side}-from", metavar="DIR",
                            help=f"run the {side}s with the rpisensor package of another checkout DIR "
                                 "(e.g. a git worktree of an older commit), to compare")  # fmt: skip
    args = parser.parse_args()
    for side in ("collector", "reporter"):
        where = getattr(args, f"{side}_from")
        if where:
            if not (Path(where) / "rpisensor" / "__init__.py").exists():
                parser.error(f"--{side}-from {where}: no rpisensor package there")
            CODE_FROM[side] = str(Path(where).resolve())
    cfg = QUICK if args.quick else FULL
    only = chosen_scenarios(parser, args.only, SCENARIOS)

    started = time.monotonic()
    SERVER_CPU, CLIENT_CPU = plan_cpus()
    if CLIENT_CPU is not None:
        os.sched_setaffinity(0, {CLIENT_CPU})  # this script keeps off the collector's CPU
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    sockets = Path(tempfile.mkdtemp(prefix="rpisensor-streams-"))  # unix socket paths must be short
    try:
        results = run_each(only, lambda name: SCENARIOS[name](cfg, sockets))
    except BENCH_FAILURES as e:
        return bench_failed(e)
    finally:
        stop_all()
        shutil.rmtree(sockets, ignore_errors=True)

    (BUILD / "streams-results.json").write_text(json.dumps({"config": cfg.__dict__, "results": results}, indent=1))
    print(render(build_table(results, cfg, judge=not args.quick), HEADER))
    print(notes(results))
    print(f"Total bench time {time.monotonic() - started:.0f} s; raw results "
          f"{(BUILD / 'streams-results.json').relative_to(ROOT)}.")  # fmt: skip
    return 0


if __name__ == "__main__":
    ensure_interpreter()
    sys.exit(main())
