#!/usr/bin/env python3
"""
The rpisensor benchmark: one command, one table.

    .venv/bin/python bench/run.py            # full run, about 6 minutes
    .venv/bin/python bench/run.py --quick    # every scenario's code path, tiny sizes

It builds the C load generator (bench/loadgen.c, gcc -O2, into bench/build/),
starts each server under test on 127.0.0.1 (pinned to CPU 0; the load
generator and this script to CPU 1, when the machine has two), drives it, and
prints one table of medians over repeated runs; within each repetition the
servers are measured one after another, in an order that rotates from one
repetition to the next. Ratios are medians of per-repetition ratios, so each
compares servers measured in the same repetition. See bench/README.md for
what each scenario measures.

Exits non-zero when the bench itself fails (a server does not start, a reply
is wrong, a connection fails); a missed goal is reported, never enforced.
Raw results go to bench/build/results.json, server logs to bench/build/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
LOGS = BUILD / "logs"
PEERS = HERE / "peers"
LOADGEN = BUILD / "loadgen"
FLOOR = BUILD / "floor_server"

SERVERS = ["rpisensor", "threaded", "asyncio", "tw-naive"]
#: Not a peer: a C server that does no work, measured to show what the machine
#: and the load generator give by themselves (see bench/peers/floor_server.c).
FLOOR_NAME = "C floor"
PEER_SCRIPTS = {
    "threaded": "threaded_server.py",
    "asyncio": "asyncio_server.py",
    "tw-naive": "twisted_naive_server.py",
    "tw-inline": "twisted_inline_server.py",  # bench/cost.py's reference, not in run.py's table
}


class BenchError(Exception):
    """The bench itself failed: a server did not start, a reply was wrong, ..."""


class Skipped(Exception):
    """A scenario cannot run here; the message says why."""


#: What ends a bench run early: its own checks, or a process that did not answer in time.
BENCH_FAILURES = (BenchError, subprocess.TimeoutExpired)


def bench_failed(error: Exception) -> int:
    """Say why the bench failed; its exit status."""
    why = f"timed out: {error}" if isinstance(error, subprocess.TimeoutExpired) else str(error)
    print(f"bench failed: {why}", file=sys.stderr)
    return 1


def run_each(only: list[str], scenario, label: str = "") -> dict:
    """
    C{scenario(name)} for each name in C{only}, each one's time said on stderr;
    a scenario that is L{Skipped} has the reason as its result.
    """
    results: dict = {}
    for name in only:
        t0 = time.monotonic()
        try:
            results[name] = scenario(name)
        except Skipped as e:
            results[name] = str(e)
            print(f"  {label}{name} skipped: {e}", file=sys.stderr, flush=True)
            continue
        print(f"  {label}{name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return results


@dataclass
class Config:
    reps: int
    s1_conns: tuple[int, ...]
    s1_duration: float
    s1_warmup: float
    s2_latency: float
    s2_clients: int
    s2_prober_ms: float
    s2_duration: float
    s2_warmup: float
    s3_latency: float
    s3_clients: int
    s3_timeout: float
    s4_idle: int
    s4_fresh: int
    s5_messages: int
    s5_passes: int
    s5_processes: int  # per implementation and repetition
    s6_runs: int  # per repetition and command


FULL = Config(
    reps=5,
    s1_conns=(1, 10, 100), s1_duration=2.0, s1_warmup=0.5,
    s2_latency=0.05, s2_clients=20, s2_prober_ms=10, s2_duration=3.0, s2_warmup=0.5,
    s3_latency=0.75, s3_clients=1000, s3_timeout=5.0,
    s4_idle=10_000, s4_fresh=20,
    s5_messages=1_000_000, s5_passes=5, s5_processes=3,
    s6_runs=3,
)  # fmt: skip

QUICK = Config(
    reps=1,
    s1_conns=(1, 10), s1_duration=0.2, s1_warmup=0.05,
    s2_latency=0.02, s2_clients=4, s2_prober_ms=10, s2_duration=0.3, s2_warmup=0.05,
    s3_latency=0.1, s3_clients=20, s3_timeout=2.0,
    s4_idle=200, s4_fresh=3,
    s5_messages=20_000, s5_passes=1, s5_processes=1,
    s6_runs=1,
)  # fmt: skip


# ---------------------------------------------------------------- environment


def ensure_interpreter() -> None:
    """Re-run under the project's venv when this Python cannot import Twisted."""
    try:
        import twisted  # noqa: F401
        import rpisensor  # noqa: F401
    except ImportError:
        venv = ROOT / ".venv"
        venv_python = venv / "bin" / "python"
        # (compare environments, not binaries: a venv's python links to the base one)
        if venv_python.exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(str(venv_python), [str(venv_python), *sys.argv])
        raise SystemExit(
            "bench: this Python cannot import twisted and rpisensor; run it with the "
            "project's venv: .venv/bin/python bench/run.py"
        ) from None


PYTHON = sys.executable
TWISTD = str(Path(sys.executable).parent / "twistd")


def chosen_scenarios(parser: argparse.ArgumentParser, only: str | None, scenarios) -> list[str]:
    """The scenarios C{--only} names (comma-separated, any case), or all; an unknown one is a usage error."""
    names = [s.strip().upper() for s in only.split(",")] if only else list(scenarios)
    unknown = [s for s in names if s not in scenarios]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(scenarios)}")
    return names


def plan_cpus() -> tuple[int | None, int | None]:
    """(server CPU, load generator CPU), or Nones when pinning is not possible."""
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


SERVER_CPU, LOADGEN_CPU = None, None


def pinned(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # root may raise it
            return
        except (ValueError, OSError):
            need = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def build_c_programs() -> None:
    """The load generator and the floor server, with gcc -O2, into bench/build/."""
    if shutil.which("gcc") is None:
        raise BenchError("gcc is needed to build bench/loadgen.c")
    BUILD.mkdir(parents=True, exist_ok=True)
    for source, binary in ((HERE / "loadgen.c", LOADGEN), (PEERS / "floor_server.c", FLOOR)):
        result = subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BenchError(f"building {source.name} failed:\n{result.stderr}")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------- servers

_running: list[subprocess.Popen] = []


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    log: Path
    port: int = 0
    counted: bool = False
    counter_lines: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid


def server_command(name: str, latency: float, counted: bool, extra: list[str]) -> list[str]:
    if name == FLOOR_NAME:
        return [str(FLOOR), "0"]
    if name == "rpisensor":
        args = [
            "-n", "--pidfile=", "rpisensor", "serve", "--gpio", "sim",
            "--sim-latency", f"{latency:g}", "--listen", "tcp:0:interface=127.0.0.1", *extra,
        ]  # fmt: skip
        if counted:
            return [PYTHON, str(PEERS / "rpisensor_counted.py"), *args]
        return [TWISTD, *args]
    return [PYTHON, str(PEERS / PEER_SCRIPTS[name]), "--port", "0", "--latency", f"{latency:g}"]


def start_servers(
    names: list[str], latency: float, tag: str, counted: bool = False, extra: list[str] = ()
) -> dict[str, Server]:
    """Start the servers (all at once, so their start-ups overlap) and wait for each port."""
    servers = {}
    for name in names:
        log = LOGS / f"{tag}-{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                server_command(name, latency, counted, list(extra)),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=BUILD, preexec_fn=pinned(SERVER_CPU),
            )  # fmt: skip
        _running.append(proc)
        has_counters = name in PEER_SCRIPTS or (name == "rpisensor" and counted)
        servers[name] = Server(name, proc, log, counted=has_counters)
    for server in servers.values():
        server.port = wait_for_port(server)
        if server.counted:
            counters(server, expect=1, ask=True)  # checks the counters answer; primes them
    return servers


def log_text(server: Server) -> str:
    try:
        return server.log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_port(server: Server, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"\(port (\d+)\)", log_text(server))
        if match:
            return int(match.group(1))
        if server.proc.poll() is not None:
            break
        time.sleep(0.02)
    tail = "\n".join(log_text(server).splitlines()[-15:])
    raise BenchError(f"{server.name} did not start listening (log {server.log}):\n{tail}")


def counters(server: Server, expect: int, ask: bool = False, timeout: float = 10.0) -> list[dict]:
    """
    Wait for C{expect} more counter lines in the server's log (the load
    generator's SIGUSR2s mark its window), asking for one first if C{ask};
    returns every counter line so far, oldest first.
    """
    if ask:
        os.kill(server.pid, signal.SIGUSR2)
    want = server.counter_lines + expect
    deadline = time.monotonic() + timeout
    while True:
        lines = re.findall(r"BENCH-COUNTERS ((?:\w+=\d+ ?)+)", log_text(server))
        if len(lines) >= want:
            server.counter_lines = len(lines)
            return [dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", line)) for line in lines]
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise BenchError(f"{server.name} did not print its counters (log {server.log})")
        time.sleep(0.01)


def stop_server(server: Server, grace: float = 5.0) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _running:
        _running.remove(proc)


def stop_all() -> None:
    for proc in list(_running):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _running.remove(proc)


# ---------------------------------------------------------------- load generator


def loadgen(args: list[str], timeout: float = 120.0) -> dict:
    result = subprocess.run(
        [str(LOADGEN), *args], capture_output=True, text=True, timeout=timeout,
        preexec_fn=pinned(LOADGEN_CPU),
    )  # fmt: skip
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(
            f"load generator {' '.join(args)} printed no result (exit {result.returncode}): "
            f"{result.stdout}{result.stderr}"
        ) from None
    if result.returncode != 0:
        raise BenchError(
            f"load generator {' '.join(args)} failed (exit {result.returncode}): "
            f"{report.get('first_error') or ''} bad replies {report.get('bad_replies')} "
            f"{report.get('first_bad_reply') or ''}{result.stderr}"
        )
    return report


def cpu_pct(report: dict) -> float:
    return 100.0 * report["cpu_s"] / report["wall_s"] if report["wall_s"] else 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy (steal included) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measured(server: Server, args: list[str]) -> dict:
    """
    Run the load generator against server; add the server's CPU use over the
    run, and the CPU that everything else on the machine used meanwhile
    ("foreign", in % of one CPU): a busy neighbour makes a run less trustworthy.
    """
    busy0, cpu0, t0 = machine_busy_seconds(), proc_cpu_seconds(server.pid), time.monotonic()
    report = loadgen([args[0], "--port", str(server.port), *args[1:]])
    busy1, cpu1, t1 = machine_busy_seconds(), proc_cpu_seconds(server.pid), time.monotonic()
    report["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / (t1 - t0)
    foreign = (busy1 - busy0) - (cpu1 - cpu0) - report["cpu_total_s"]
    report["foreign_cpu_pct"] = max(0.0, 100.0 * foreign / (t1 - t0))
    return report


# ---------------------------------------------------------------- scenarios


def rotated(items: list[str], rep: int) -> list[str]:
    k = rep % len(items)
    return items[k:] + items[:k]


def s1(cfg: Config, rep: int) -> dict:
    out: dict = {}
    order = rotated([*SERVERS, FLOOR_NAME], rep)
    servers = start_servers(order, 0.0, f"r{rep}-S1")
    for name in order:
        server = servers[name]
        for conns in cfg.s1_conns:
            r = measured(server, [
                "closed", "--clients", str(conns), "--duration", str(cfg.s1_duration),
                "--warmup", str(cfg.s1_warmup),
            ])  # fmt: skip
            out.setdefault(f"S1.c{conns}", {})[name] = {
                "rps": r["rps"], "p50": r["p50_ms"], "p99": r["p99_ms"],
                "lg_cpu": cpu_pct(r), "srv_cpu": r["server_cpu_pct"], "foreign": r["foreign_cpu_pct"],
            }  # fmt: skip
        stop_server(server)
    return out


def s2(cfg: Config, rep: int) -> dict:
    out: dict = {}
    order = rotated(SERVERS, rep)
    servers = start_servers(order, cfg.s2_latency, f"r{rep}-S2", counted=True)
    for name in order:
        server = servers[name]
        r = measured(server, [
            "closed", "--clients", str(cfg.s2_clients), "--duration", str(cfg.s2_duration),
            "--warmup", str(cfg.s2_warmup), "--prober-ms", str(cfg.s2_prober_ms),
            "--signal-pid", str(server.pid),
        ])  # fmt: skip
        lines = counters(server, expect=2)
        reads = lines[-1]["reads"] - lines[-2]["reads"]
        if r["prober"]["n"] == 0:
            raise BenchError(f"S2 {name}: the prober got no reply in the window")
        out[name] = {
            "rps": r["rps"], "p50": r["p50_ms"], "p99": r["p99_ms"],
            "prober_p50": r["prober"]["p50_ms"], "prober_p99": r["prober"]["p99_ms"],
            "prober_max": r["prober"]["max_ms"], "reads": reads, "reads_per_s": reads / r["wall_s"],
            "lg_cpu": cpu_pct(r), "srv_cpu": r["server_cpu_pct"], "foreign": r["foreign_cpu_pct"],
        }  # fmt: skip
        stop_server(server)
    # The machine's own floor for the prober: the same prober, alone, against a
    # C server that does no work.
    floor = start_servers([FLOOR_NAME], 0.0, f"r{rep}-S2")[FLOOR_NAME]
    r = measured(floor, [
        "closed", "--clients", "0", "--duration", str(cfg.s2_duration),
        "--warmup", str(cfg.s2_warmup), "--prober-ms", str(cfg.s2_prober_ms),
    ])  # fmt: skip
    out[FLOOR_NAME] = {
        "prober_p50": r["prober"]["p50_ms"], "prober_p99": r["prober"]["p99_ms"],
        "foreign": r["foreign_cpu_pct"],
    }  # fmt: skip
    stop_server(floor)
    return {"S2": out}


def s3(cfg: Config, rep: int) -> dict:
    out: dict = {}
    order = rotated(SERVERS, rep)
    servers = start_servers(order, cfg.s3_latency, f"r{rep}-S3", counted=True)
    for name in order:
        server = servers[name]
        # The count before the shot is asked for while the server is idle: the load
        # generator's own start mark can be handled late by a server whose main
        # thread then competes with 1,000 busy threads for the GIL.
        before = counters(server, expect=1, ask=True)[-1]["reads"]
        r = measured(server, [
            "oneshot", "--clients", str(cfg.s3_clients), "--timeout", str(cfg.s3_timeout),
            "--signal-pid", str(server.pid),
        ])  # fmt: skip
        lines = counters(server, expect=2)
        out[name] = {
            "complete": r["complete"], "answered": r["answered"],
            "all_ms": r["all_answered_ms"] if r["complete"] else float("inf"),
            "p50": r["p50_ms"], "reads": lines[-1]["reads"] - before,
            "lg_cpu": cpu_pct(r), "srv_cpu": r["server_cpu_pct"], "foreign": r["foreign_cpu_pct"],
        }  # fmt: skip
        stop_server(server, grace=3.0)  # slow peers may still hold queued reads: killed
    return {"S3": out}


def s4(cfg: Config, rep: int) -> dict:
    n = cfg.s4_idle
    server = start_servers(
        ["rpisensor"], 0.0, f"r{rep}-S4", extra=["--max-connections", str(n + 100)]
    )["rpisensor"]
    measured(server, ["closed", "--clients", "10", "--duration", "0.2", "--warmup", "0.05"])
    time.sleep(0.5)
    rss0, fds0 = vm_rss_kib(server.pid), open_fds(server.pid)
    proc = subprocess.Popen(
        [str(LOADGEN), "idle", "--port", str(server.port), "--clients", str(n),
         "--fresh", str(cfg.s4_fresh)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=pinned(LOADGEN_CPU),
    )  # fmt: skip
    _running.append(proc)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            rest = proc.communicate(timeout=10)
            raise BenchError(f"S4: the idle connections were not opened: {line}{rest}")
        deadline = time.monotonic() + 30
        while open_fds(server.pid) < fds0 + n:
            if time.monotonic() > deadline:
                raise BenchError(f"S4: the server holds {open_fds(server.pid) - fds0} of {n}")
            time.sleep(0.05)
        time.sleep(0.5)
        rss1 = vm_rss_kib(server.pid)
        stdout, stderr = proc.communicate("measure\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _running.remove(proc)
    try:
        r = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"S4: no result from the load generator: {stdout}{stderr}") from None
    if proc.returncode != 0:
        raise BenchError(f"S4: the load generator failed: {r.get('first_error')} {stderr}")
    stop_server(server)
    return {"S4": {"rpisensor": {
        "rss_before_kib": rss0, "rss_after_kib": rss1,
        "rss_per_conn": (rss1 - rss0) * 1024 / n, "fresh_p50": r["p50_ms"],
        "fresh_max": r["max_ms"], "fresh_connect_p50": r["with_connect_p50_ms"],
        "connect_all_s": r["connect_all_s"],
    }}}  # fmt: skip


class ForeignCPU:
    """
    Measures the CPU that other processes used while a block ran, in % of one
    CPU: the machine's busy time less this process's and its waited-for children's.
    """

    def __enter__(self) -> ForeignCPU:
        self.busy0, self.own0, self.t0 = machine_busy_seconds(), self._own(), time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        foreign = machine_busy_seconds() - self.busy0 - (self._own() - self.own0)
        self.pct = max(0.0, 100.0 * foreign / (time.monotonic() - self.t0))

    @staticmethod
    def _own() -> float:
        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total


def s5(cfg: Config, rep: int) -> dict:
    """
    cfg.s5_processes processes per implementation, alternating; each keeps its
    fastest pass, and the repetition keeps each implementation's fastest process.
    """
    best: dict[str, float] = {}
    with ForeignCPU() as foreign:
        for _ in range(cfg.s5_processes):
            for impl in rotated(["rpisensor", "lineonly"], rep):
                result = subprocess.run(
                    [PYTHON, str(HERE / "framing.py"), "--impl", impl,
                     "--messages", str(cfg.s5_messages), "--passes", str(cfg.s5_passes)],
                    capture_output=True, text=True, cwd=BUILD, preexec_fn=pinned(SERVER_CPU),
                )  # fmt: skip
                if result.returncode != 0:
                    raise BenchError(f"S5 {impl} failed: {result.stdout}{result.stderr}")
                fps = json.loads(result.stdout)["frames_per_s"]
                best[impl] = max(best.get(impl, 0.0), fps)
    return {"S5": {impl: {"fps": fps, "foreign": foreign.pct} for impl, fps in best.items()}}


S6_COMMANDS = {
    "rpisensor": ([TWISTD, "rpisensor", "--help"], "serve"),
    "bare": ([TWISTD, "--help"], "rpisensor"),  # also shows twistd finds the plugin
}


def s6_once(name: str) -> float:
    command, expected = S6_COMMANDS[name]
    start = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=BUILD, preexec_fn=pinned(SERVER_CPU)
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0 or expected not in result.stdout:
        raise BenchError(f"S6: {' '.join(command)} failed: {result.stdout[-500:]}{result.stderr}")
    return seconds


def s6(cfg: Config, rep: int) -> dict:
    if rep == 0:
        for name in S6_COMMANDS:  # warm the page cache and twistd's plugin cache
            s6_once(name)
    times: dict[str, list[float]] = {name: [] for name in S6_COMMANDS}
    with ForeignCPU() as foreign:
        for _ in range(cfg.s6_runs):
            for name in rotated(list(S6_COMMANDS), rep):
                times[name].append(s6_once(name))
    return {"S6": {
        name: {"ms": 1000 * statistics.median(t), "foreign": foreign.pct} for name, t in times.items()
    }}  # fmt: skip


SCENARIOS = {"S1": s1, "S2": s2, "S3": s3, "S4": s4, "S5": s5, "S6": s6}


# ---------------------------------------------------------------- the table


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Results:
    def __init__(self, reps: list[dict]):
        self.reps = reps

    def series(self, key: str, server: str, metric: str) -> list:
        values = (rep.get(key, {}).get(server, {}).get(metric) for rep in self.reps)
        return [v for v in values if v is not None]

    def median(self, key: str, server: str, metric: str) -> float | None:
        return med(self.series(key, server, metric))

    def ratio(self, key: str, a: str, b: str, metric: str) -> float | None:
        """Median over repetitions of a/b, each repetition's a and b measured together."""
        ratios = []
        for rep in self.reps:
            row = rep.get(key, {})
            if a in row and b in row and row[b][metric]:
                ratios.append(row[a][metric] / row[b][metric])
        return med(ratios)


def fmt(value, kind: str = "num") -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    if kind == "ms":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "pct":
        return f"{value:.0f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def build_table(res: Results, cfg: Config, judge: bool) -> list[list[str]]:
    """
    The rows of the table. C{judge}: say whether each goal is met (only at the
    full sizes the goals are stated for; --quick sizes say "n/a").
    """
    rows: list[list[str]] = []
    others = SERVERS[1:]
    short = {"threaded": "thr", "asyncio": "asy", "tw-naive": "naive"}
    columns = [*SERVERS, FLOOR_NAME]

    def verdict(ok: bool | None) -> str:
        if not judge:
            return "n/a (quick)"
        return "-" if ok is None else ("met" if ok else "MISSED")

    def lg(key: str) -> str:  # the C floor is left out: it is meant to saturate the load generator
        values = [res.median(key, s, "lg_cpu") for s in SERVERS]
        values = [v for v in values if v is not None]
        return fmt(max(values), "pct") if values else "-"

    def pair(key: str, s: str, a: str, b: str) -> str:
        x, y = res.median(key, s, a), res.median(key, s, b)
        return "-" if x is None else f"{fmt(x, 'ms')} / {fmt(y, 'ms')}"

    def vs(key: str, metric: str) -> str:
        ratios = {s: res.ratio(key, "rpisensor", s, metric) for s in others}
        return " ".join(f"{fmt(ratios[s], 'x')} {short[s]}" for s in others)

    for conns in cfg.s1_conns:
        key = f"S1.c{conns}"
        goal, ok = "-", None
        if conns == 100:
            goal = ">=2x asy & naive, >=0.6x thr"
            ratios = {s: res.ratio(key, "rpisensor", s, "rps") for s in others}
            if None not in ratios.values():
                ok = ratios["asyncio"] >= 2 and ratios["tw-naive"] >= 2 and ratios["threaded"] >= 0.6
        rows.append([
            f"S1 {conns} conn", "round trips/s", *(fmt(res.median(key, s, "rps")) for s in columns),
            vs(key, "rps"), lg(key), goal, verdict(ok) if goal != "-" else "-",
        ])  # fmt: skip
        rows.append([
            f"S1 {conns} conn", "p50 / p99 ms", *(pair(key, s, "p50", "p99") for s in columns),
            "", "", "", "",
        ])  # fmt: skip

    key = "S2"
    name = f"S2 {cfg.s2_latency * 1000:.0f}ms reads"
    p99 = res.median(key, "rpisensor", "prober_p99")
    rows.append([
        name, "prober ping p50 / p99 ms",
        *(pair(key, s, "prober_p50", "prober_p99") for s in columns),
        "", lg(key), "p99 <= 2 ms", verdict(None if p99 is None else p99 <= 2.0),
    ])  # fmt: skip
    rps = res.median(key, "rpisensor", "rps")
    rows.append([
        name, f"{cfg.s2_clients} clients' round trips/s",
        *(fmt(res.median(key, s, "rps")) for s in columns),
        vs(key, "rps"), "", ">= 380/s", verdict(None if rps is None else rps >= 380),
    ])  # fmt: skip
    rows.append([
        name, "clients' p50 / p99 ms", *(pair(key, s, "p50", "p99") for s in columns),
        "", "", "", "",
    ])  # fmt: skip
    rows.append([
        name, "reads in window (reads/s)",
        *(f"{fmt(res.median(key, s, 'reads'), 'int')} ({fmt(res.median(key, s, 'reads_per_s'))})"
          if res.series(key, s, "reads") else "-" for s in columns),
        "", "", "", "",
    ])  # fmt: skip

    key = "S3"
    name = f"S3 {cfg.s3_latency * 1000:.0f}ms reads"
    cells = []
    for s in columns:
        t = res.median(key, s, "all_ms")
        if t is None:
            cells.append("-")
        elif t == float("inf"):
            answered = res.median(key, s, "answered")
            cells.append(f">{cfg.s3_timeout * 1000:.0f} ({fmt(answered, 'int')} answered)")
        else:
            cells.append(fmt(t, "ms"))
    t = res.median(key, "rpisensor", "all_ms")
    reads = res.median(key, "rpisensor", "reads")
    rows.append([
        name, f"ms until all {cfg.s3_clients:,} answered", *cells, "", lg(key), "<= 1500 ms",
        verdict(None if t is None else t <= 1500),
    ])  # fmt: skip
    rows.append([
        name, "reads performed by then",
        *(fmt(res.median(key, s, "reads"), "int") for s in columns),
        "", "", "<= 2 reads", verdict(None if reads is None else reads <= 2),
    ])  # fmt: skip

    key = "S4"
    name = f"S4 {cfg.s4_idle:,} idle"
    per = res.median(key, "rpisensor", "rss_per_conn")
    rows.append([
        name, "RSS per idle connection, bytes", fmt(per, "int"), "-", "-", "-", "-",
        f"VmRSS {fmt(res.median(key, 'rpisensor', 'rss_before_kib'), 'int')} -> "
        f"{fmt(res.median(key, 'rpisensor', 'rss_after_kib'), 'int')} KiB",
        "", "<= 2048", verdict(None if per is None else per <= 2048),
    ])  # fmt: skip
    p50, worst = res.median(key, "rpisensor", "fresh_p50"), res.median(key, "rpisensor", "fresh_max")
    rows.append([
        name, "fresh client's go p50 / max ms", "-" if p50 is None else f"{fmt(p50, 'ms')} / {fmt(worst, 'ms')}",
        "-", "-", "-", "-",
        f"incl. connect: p50 {fmt(res.median(key, 'rpisensor', 'fresh_connect_p50'), 'ms')} ms", "",
        "<= 10 ms", verdict(None if worst is None else worst <= 10),
    ])  # fmt: skip

    key = "S5"
    ratio = res.ratio(key, "rpisensor", "lineonly", "fps")
    rows.append([
        "S5 framing", f"frames/s, {cfg.s5_messages:,} msgs", fmt(res.median(key, "rpisensor", "fps")),
        "-", "-", "-", "-",
        f"{fmt(ratio, 'x')} LineOnlyReceiver ({fmt(res.median(key, 'lineonly', 'fps'))}/s)", "",
        ">= 1.0x", verdict(None if ratio is None else ratio >= 1.0),
    ])  # fmt: skip

    key = "S6"
    ratio = res.ratio(key, "rpisensor", "bare", "ms")
    rows.append([
        "S6 start-up", "twistd rpisensor --help, ms", fmt(res.median(key, "rpisensor", "ms"), "ms"),
        "-", "-", "-", "-",
        f"{fmt(ratio, 'x')} bare twistd --help ({fmt(res.median(key, 'bare', 'ms'), 'ms')} ms)", "",
        "<= 1.1x", verdict(None if ratio is None else ratio <= 1.1),
    ])  # fmt: skip
    return rows


HEADER = ["scenario", "metric", "rpisensor", "threaded", "asyncio", "tw-naive", "C floor",
          "rpisensor vs others", "LG CPU%", "goal", "goal met?"]  # fmt: skip


def render(rows: list[list[str]], header: list[str] = HEADER) -> str:
    """A Markdown table of C{rows} under C{header}, its columns padded to line up."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def notes(res: Results, cfg: Config) -> str:
    columns = [*SERVERS, FLOOR_NAME]

    def per_server(key: str, metric: str) -> str:
        return ", ".join(
            f"{s} {fmt(res.median(key, s, metric), 'pct')}" for s in columns if res.series(key, s, metric)
        )

    def foreign_text() -> str:
        parts = []
        for key in [f"S1.c{c}" for c in cfg.s1_conns] + ["S2", "S3", "S5", "S6"]:
            values = [v for s in columns for v in res.series(key, s, "foreign")]
            if values:
                parts.append(f"{key.replace('.c', ' c=')} {fmt(med(values), 'pct')}, {fmt(max(values), 'pct')}")
        return "; ".join(parts) or "-"

    last = f"S1.c{cfg.s1_conns[-1]}"
    at = f"S1 at {cfg.s1_conns[-1]} conns"
    pinning = (
        f"servers on CPU {SERVER_CPU}, load generator on CPU {LOADGEN_CPU}"
        if SERVER_CPU is not None else "no CPU pinning (fewer than 2 CPUs or no sched_setaffinity)"
    )  # fmt: skip
    foreign = [v for key in [*(f"S1.c{c}" for c in cfg.s1_conns), "S2", "S3", "S5", "S6"]
               for s in columns for v in res.series(key, s, "foreign")]  # fmt: skip
    warning = []
    busy = [v for v in foreign if v > 25]
    if foreign and len(busy) > 0.1 * len(foreign):
        warning = [
            f"WARNING: {len(busy)} of {len(foreign)} measurements ran while other processes used more "
            "than 25% of a CPU: numbers from this run are disturbed; rerun on a quiet machine."
        ]
    return "\n".join([
        f"Medians of {cfg.reps} repetition(s), servers interleaved in rotating order; {pinning}. "
        "Ratios: median of per-repetition ratios.",
        f"Server CPU % over the run: {at}: {per_server(last, 'srv_cpu') or '-'}; "
        f"S2: {per_server('S2', 'srv_cpu') or '-'}.",
        f"Load generator CPU % of one CPU in the measured window, {at}: {per_server(last, 'lg_cpu') or '-'}.",
        "CPU used by other processes on the machine during the measurements (median, max; % of one "
        f"CPU): {foreign_text()}.",
        "C floor: a C server doing no work (S1: what the load generator can drive; S2: the prober alone).",
        f"S1: {cfg.s1_duration:g} s windows after {cfg.s1_warmup:g} s warm-up. S2: {cfg.s2_clients} "
        f"clients + 1 prober pinging every {cfg.s2_prober_ms:g} ms, {cfg.s2_duration:g} s window. "
        f"S3: {cfg.s3_clients:,} connections, one 'go' each at once, timeout {cfg.s3_timeout:g} s. "
        f"S4: rpisensor with --max-connections {cfg.s4_idle + 100}, {cfg.s4_fresh} fresh clients.",
        *warning,
    ])  # fmt: skip


# ---------------------------------------------------------------- main


def main() -> int:
    global SERVER_CPU, LOADGEN_CPU
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (CI)")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, --quick 1)")
    parser.add_argument("--only", help="comma-separated scenarios to run, e.g. S1,S5")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.reps:
        cfg.reps = args.reps
    only = chosen_scenarios(parser, args.only, SCENARIOS)

    started = time.monotonic()
    SERVER_CPU, LOADGEN_CPU = plan_cpus()
    if LOADGEN_CPU is not None:
        os.sched_setaffinity(0, {LOADGEN_CPU})  # this script keeps off the servers' CPU
    raise_nofile(max(cfg.s4_idle, cfg.s3_clients) + 1024)
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    reps: list[dict] = []
    try:
        build_c_programs()
        for rep in range(cfg.reps):
            # Each of run.py's scenarios gives several rows: one dict of them all per repetition.
            each = run_each(only, lambda name: SCENARIOS[name](cfg, rep), f"rep {rep + 1}/{cfg.reps} ")
            reps.append({row: value for rows in each.values() for row, value in rows.items()})
    except BENCH_FAILURES as e:
        return bench_failed(e)
    finally:
        stop_all()

    res = Results(reps)
    (BUILD / "results.json").write_text(json.dumps({"config": cfg.__dict__, "reps": reps}, indent=1))
    print(render(build_table(res, cfg, judge=not args.quick)))
    print(notes(res, cfg))
    print(f"Total bench time {time.monotonic() - started:.0f} s; raw results {BUILD / 'results.json'}.")
    return 0


if __name__ == "__main__":
    ensure_interpreter()
    sys.exit(main())
