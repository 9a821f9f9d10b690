#!/usr/bin/env python3
"""
The edge benchmarks: how soon a change of an input reaches a subscriber, and what
answering from tracked levels gives S1.

    .venv/bin/python bench/edges.py            # full run, about 3 minutes
    .venv/bin/python bench/edges.py --quick    # every scenario at tiny sizes (CI)

E1  kernel edges: serve --gpio gpiod inside User-Mode Linux (the gpio-sim header chip),
    the button's line flipped, the reading timed until it reaches a v2 subscriber;
    p50/p99, and the kernel's own part (sysfs write to the edge event's timestamp).
E2  RPi.GPIO polling: serve --gpio rpi --poll-interval 0.01 on the emulated Pi
    (tests/emulated_pi.py), the level bit flipped in its /dev/gpiomem, timed the same way.
E3  bench/run.py's S1 (instant reads; 1, 10, 100, 1,000 closed-loop connections) with the
    button edge-tracked, as the simulated backend is without --sim-latency (checked in
    rpisensor's log), against itself answering through its read pool and the
    thread-per-connection server, measured back to back: goals >= 0.8x the threaded
    server's round trips/s at 100 connections, and more than it at 1,000.

E1 needs the UML kernel (tests/uml/build-kernel.sh), E2 root, unshare and RPi.GPIO
(pip install -e '.[emulated-pi]'); each is skipped, with the reason, where it cannot run.
Exits non-zero when the bench itself fails (a wrong reading, a server that does not start);
a missed goal is reported, never enforced. bench/README.md has the method; raw results go
to bench/build/edges-results.json, server logs to bench/build/edges-logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import run  # noqa: E402  (bench/run.py: its S1, its servers and load generator)

LOGS = run.BUILD / "edges-logs"
RESULTS = run.BUILD / "edges-results.json"
#: rpisensor's log line when its inputs are edge-tracked (rpisensor/stream/state.py).
TRACKED = re.compile(r"Following the changes of button as the GPIO driver reports them")


@dataclass
class Config:
    samples: int  # flips in E1 and E2
    poll_interval: float
    s1: run.Config
    reps: int  # of E3
    conns: tuple[int, ...] = ()  # E3's numbers of connections; S1's when empty

    @property
    def levels(self) -> tuple[int, ...]:
        return self.conns or self.s1.s1_conns


FULL = Config(samples=1000, poll_interval=0.01, s1=run.FULL, reps=5, conns=(1, 10, 100, 1000))
QUICK = Config(samples=20, poll_interval=0.01, s1=run.QUICK, reps=1)


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return {"n": len(ordered), "p50": statistics.median(ordered), "p99": at(0.99), "max": ordered[-1],
            "min": ordered[0]}  # fmt: skip


# ---------------------------------------------------------------- E1: kernel edges in UML


def e1(cfg: Config) -> dict:
    from tests.uml import guest

    reason = guest.unavailable_reason(run.PYTHON)
    if reason:
        raise run.Skipped(f"the UML guest cannot run: {reason}")
    with tempfile.TemporaryDirectory(prefix="rpisensor-edges-") as directory:
        results = Path(directory)
        (results / "edges-job.json").write_text(json.dumps({"samples": cfg.samples, "seed": 10}))
        if run.SERVER_CPU is not None:
            os.sched_setaffinity(0, {run.SERVER_CPU})  # UML and what it forks inherit it
        try:
            with run.ForeignCPU() as foreign:
                booted = guest.run_guest(
                    [str(HERE / "edges_guest.py")], results, timeout=120 + cfg.samples * 0.2
                )
        finally:
            if run.LOADGEN_CPU is not None:
                os.sched_setaffinity(0, {run.LOADGEN_CPU})
        (LOGS / "e1-guest-pytest.txt").write_text(booted.output)
        (LOGS / "e1-guest-console.txt").write_text(booted.console)
        outcomes = list(booted.tests.values())
        # The timings are whole once the guest's pytest passed: a UML that then fails to power off
        # cleanly (it has aborted at the halt on a loaded host) is noted, not fatal.
        measured = booted.pytest_status == 0 and not booted.timed_out
        if not measured or not outcomes or any(test.bad for test in outcomes):
            details = "\n".join(f"{t.nodeid}: {t.outcome}\n{t.longrepr}" for t in outcomes)
            raise run.BenchError(f"E1: the guest's measurement failed\n{details}\n{booted.describe()}")
        if all(test.outcome == "skipped" for test in outcomes):
            raise run.Skipped("; ".join(test.longrepr for test in outcomes))
        data = json.loads((results / "edges-latency.json").read_text())
    samples = data["samples"]
    return {
        "total": percentiles([s["total_ms"] for s in samples]),
        "kernel": percentiles([s["kernel_ms"] for s in samples]),
        "rest": percentiles([s["total_ms"] - s["kernel_ms"] for s in samples]),
        "guest_kernel": data["kernel"], "foreign": foreign.pct, "uml_status": booted.uml_status,
    }  # fmt: skip


# ---------------------------------------------------------------- E2: RPi.GPIO polling


def usage(pid: int) -> tuple[float, float, float, float]:
    """The machine's busy CPU seconds, this process's, process C{pid}'s, and the monotonic time."""
    return run.machine_busy_seconds(), run.ForeignCPU._own(), run.proc_cpu_seconds(pid), time.monotonic()


def e2(cfg: Config) -> dict:
    from tests import emulated_pi
    from tests.v2_subscriber import RawSubscriber

    reason = emulated_pi.unavailable_reason()
    if reason:
        raise run.Skipped(f"the emulated Pi cannot run: {reason}")
    directory = Path(tempfile.mkdtemp(prefix="rpisensor-edges-pi-"))
    try:
        pi = emulated_pi.EmulatedPi(directory)
        reason = pi.probe()
        if reason:
            raise run.Skipped(reason)
        pi.set_levels(high={8})  # BOARD 24 = BCM 8, pull-up, active low: released
        argv = [
            run.TWISTD, "-n", "--pidfile=", "rpisensor", "serve", "--gpio", "rpi",
            "--poll-interval", f"{cfg.poll_interval:g}", "--listen", "tcp:0:interface=127.0.0.1",
            "--journal", str(directory / "journal.sqlite"),
        ]  # fmt: skip
        log = LOGS / "e2-serve-rpi.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                pi.command(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=directory, preexec_fn=run.pinned(run.SERVER_CPU),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        run._running.append(proc)
        server = run.Server("rpisensor --gpio rpi", proc, log)
        server.port = run.wait_for_port(server)
        rng = random.Random(20)
        latencies = []
        before = usage(proc.pid)
        subscriber = RawSubscriber(server.port, 0)
        try:
            first = subscriber.next_entry()  # the first poll's
            if (first["seq"], first["value"]) != (1, 0):
                raise run.BenchError(f"E2: the first reading should be the released button: {first}")
            for count in range(1, cfg.samples + 1):
                # A random pause, so flips fall anywhere in the polling period.
                time.sleep(rng.uniform(0.005, 0.025))
                pressed = count % 2 == 1
                written = time.monotonic_ns()
                pi.set_levels(high=set() if pressed else {8})
                entry = subscriber.next_entry()
                if entry["value"] != int(pressed):
                    raise run.BenchError(f"E2: flip {count} should read {int(pressed)}, got {entry}")
                latencies.append((subscriber.arrived[-1] - written) / 1e6)
        finally:
            subscriber.close()
        after = usage(proc.pid)
        run.stop_server(server)
        if proc.returncode != 0:
            raise run.BenchError(f"E2: serve exited {proc.returncode} (log {log})")
        busy, own, server_cpu, wall = (b - a for a, b in zip(before, after))
        return {
            "total": percentiles(latencies), "server_cpu": 100 * server_cpu / wall,
            "foreign": max(0.0, 100 * (busy - own - server_cpu) / wall),
        }  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------- E3: S1, edge-tracked


#: E3's servers: rpisensor edge-tracked, the same answering through its read pool, the goal's reference.
POOLED = "rpisensor pool"
E3_SERVERS = ["rpisensor", POOLED, "threaded"]
#: Simulated pins with failures injected play a sensor that must be read (no edges); one failure
#: in a billion reads is never reached in a run, so every read is instant and succeeds.
POOLED_OPTIONS = ["--sim-fail-every", "1000000000"]
#: A measurement is quiet when other processes used at most this much of one CPU (%), as in run.py.
QUIET = 25


def e3(cfg: Config) -> dict:
    """
    S1's measurement (run.py's load generator, windows and warm-up): rpisensor edge-tracked,
    the same reading through its pool, and the thread-per-connection server. Per repetition
    all three are started, and at each number of connections measured one right after
    another, in an order that rotates between repetitions.
    """
    s1 = cfg.s1
    reps = []
    for rep in range(cfg.reps):
        order = run.rotated(E3_SERVERS, rep)
        servers = run.start_servers(["rpisensor", "threaded"], 0.0, f"r{rep}-E3")
        servers[POOLED] = run.start_servers(["rpisensor"], 0.0, f"r{rep}-E3-pool", extra=POOLED_OPTIONS)[
            "rpisensor"
        ]
        for name, tracked in (("rpisensor", True), (POOLED, False)):
            log = servers[name].log
            if bool(TRACKED.search(log.read_text(errors="replace"))) != tracked:
                raise run.BenchError(
                    f"E3: {name} should {'' if tracked else 'not '}track the button (log {log})"
                )
        out: dict = {}
        for conns in cfg.levels:
            for name in order:
                r = run.measured(servers[name], [
                    "closed", "--clients", str(conns), "--duration", str(s1.s1_duration),
                    "--warmup", str(s1.s1_warmup),
                ])  # fmt: skip
                out.setdefault(f"S1.c{conns}", {})[name] = {
                    "rps": r["rps"], "p50": r["p50_ms"], "p99": r["p99_ms"],
                    "lg_cpu": run.cpu_pct(r), "srv_cpu": r["server_cpu_pct"], "foreign": r["foreign_cpu_pct"],
                    # The server's CPU over the whole load generator run (warm-up and window, both
                    # at full load) per round trip at the window's rate: what a request costs,
                    # whatever share of the CPU the machine's other processes left it.
                    "cpu_us": r["server_cpu_pct"] / 100 / r["rps"] * 1e6 if r["rps"] else None,
                }  # fmt: skip
        for server in servers.values():
            run.stop_server(server)
        reps.append(out)
        print(f"  E3 rep {rep + 1}/{cfg.reps} done", file=sys.stderr, flush=True)
    return {"reps": reps}


SCENARIOS = {"E1": e1, "E2": e2, "E3": e3}


# ---------------------------------------------------------------- the table


def ms_pair(p: dict) -> str:
    return f"{run.fmt(p['p50'], 'ms')} / {run.fmt(p['p99'], 'ms')}"


def build_rows(out: dict, cfg: Config, judge: bool) -> list[list[str]]:
    rows = []

    def verdict(ok: bool) -> str:
        return ("met" if ok else "MISSED") if judge else "n/a (quick)"

    e = out.get("E1")
    if isinstance(e, str):
        rows.append(["E1 gpiod, UML", "skipped", e, "", ""])
    elif e:
        n = e["total"]["n"]
        rows.append(["E1 gpiod, UML", f"flip -> subscriber p50 / p99 ms ({n} flips)", ms_pair(e["total"]),
                     "-", "-"])  # fmt: skip
        rows.append(
            ["E1 gpiod, UML", "  of which flip -> kernel event p50 / p99 ms", ms_pair(e["kernel"]), "", ""]
        )
        rows.append(["E1 gpiod, UML", "  of which kernel event -> subscriber p50 / p99 ms",
                     ms_pair(e["rest"]),
                     "", ""])  # fmt: skip
    e = out.get("E2")
    name = f"E2 RPi.GPIO, poll {cfg.poll_interval * 1000:g} ms"
    if isinstance(e, str):
        rows.append([name, "skipped", e, "", ""])
    elif e:
        t = e["total"]
        rows.append([name, f"flip -> subscriber p50 / p99 ms ({t['n']} flips)", ms_pair(t), "-", "-"])
        rows.append([name, "  max ms; serve's CPU %",
                     f"{run.fmt(t['max'], 'ms')}; {run.fmt(e['server_cpu'], 'pct')}",
                     "", ""])  # fmt: skip
    e = out.get("E3")
    if e:
        res = run.Results(e["reps"])
        for conns in cfg.levels:
            key = f"S1.c{conns}"
            name = f"E3 S1 {conns} conn"
            rows.append([
                name, "round trips/s: rpisensor edge-tracked, through its pool, threaded",
                ", ".join(run.fmt(res.median(key, s, "rps")) for s in E3_SERVERS), "", "",
            ])  # fmt: skip
            for other, label in ((POOLED, "itself through its pool"), ("threaded", "threaded")):
                ratio = res.ratio(key, "rpisensor", other, "rps")
                per_rep = [r[key]["rpisensor"]["rps"] / r[key][other]["rps"] for r in e["reps"]]
                goal, ok = "-", "-"
                if conns == 100 and other == "threaded":
                    goal, ok = ">= 0.8x thr", verdict(ratio >= 0.8)
                elif conns == 1000 and other == "threaded":
                    goal, ok = "> 1.0x thr", verdict(ratio > 1.0)
                rows.append([
                    name, f"edge-tracked vs {label} (each repetition's)",
                    f"{run.fmt(ratio, 'x')} ({' '.join(run.fmt(x, 'x') for x in per_rep)})", goal, ok,
                ])  # fmt: skip
            # The repetitions in which no other process used more than QUIET % of a CPU while any of
            # the three was measured at this level.
            quiet = [r for r in e["reps"] if max(r[key][s]["foreign"] for s in E3_SERVERS) <= QUIET]
            if quiet:
                ratios = [r[key]["rpisensor"]["rps"] / r[key]["threaded"]["rps"] for r in quiet]
                rows.append([
                    name, f"edge-tracked vs threaded, quiet repetitions only ({len(quiet)} of {len(e['reps'])})",
                    f"{run.fmt(statistics.median(ratios), 'x')} ({' '.join(run.fmt(x, 'x') for x in ratios)})",
                    "", "",
                ])  # fmt: skip
            else:
                rows.append([name, "quiet repetitions (others under 25% of a CPU)", "none", "", ""])
            rows.append([
                name, "server CPU us per round trip: the same three",
                ", ".join(run.fmt(res.median(key, s, "cpu_us")) for s in E3_SERVERS), "", "",
            ])  # fmt: skip
            rows.append([
                name, "p50 / p99 ms: the same three",
                ", ".join(ms_pair({"p50": res.median(key, s, "p50"), "p99": res.median(key, s, "p99")})
                          for s in E3_SERVERS),
                "", "",
            ])  # fmt: skip
    return rows


HEADER = ["scenario", "metric", "value", "goal", "goal met?"]


def notes(out: dict, cfg: Config) -> str:
    pinning = (
        f"servers (and the UML guest) on CPU {run.SERVER_CPU}, load generator, flipper and subscriber of E2 "
        f"on CPU {run.LOADGEN_CPU}" if run.SERVER_CPU is not None else "no CPU pinning (fewer than 2 CPUs)"
    )  # fmt: skip
    lines = [pinning + "."]
    foreign = []
    for name in ("E1", "E2"):
        if isinstance(out.get(name), dict):
            foreign.append(f"{name} {run.fmt(out[name]['foreign'], 'pct')}")
    if out.get("E3"):
        values = [v for rep in out["E3"]["reps"] for row in rep.values() for s in row.values()
                  if (v := s.get("foreign")) is not None]  # fmt: skip
        foreign.append(
            f"E3 median {run.fmt(statistics.median(values), 'pct')}, max {run.fmt(max(values), 'pct')}"
        )
        lines.append(f"E3: {cfg.reps} repetition(s); at each level the three servers measured back to back, "
                     "in rotating order; a ratio is the median of per-repetition ratios. 'Through its pool': "
                     f"rpisensor with {' '.join(POOLED_OPTIONS)} (simulated pins that must be read).")  # fmt: skip
    if foreign:
        lines.append(
            "CPU used by other processes during the measurements (% of one CPU): " + "; ".join(foreign) + "."
        )
    measured = [out[name]["foreign"] for name in ("E1", "E2") if isinstance(out.get(name), dict)]
    if out.get("E3"):
        measured += [s["foreign"] for rep in out["E3"]["reps"] for row in rep.values() for s in row.values()]
    busy = [v for v in measured if v > 25]
    if measured and len(busy) > 0.1 * len(measured):
        lines.append(
            f"WARNING: {len(busy)} of {len(measured)} measurements ran while other processes used more "
            "than 25% of a CPU: numbers from this run are disturbed (round trips/s most, CPU per round trip least); "
            "rerun on a quiet machine."
        )
    if isinstance(out.get("E1"), dict):
        lines.append(f"E1 ran in the guest kernel {out['E1']['guest_kernel']} (gpio-sim, 1000 Hz tick), "
                     "its journal on the guest's tmpfs.")  # fmt: skip
        if out["E1"]["uml_status"] != 0:
            lines.append(f"E1: UML exited with status {out['E1']['uml_status']} after the guest's pytest had "
                         "passed and written its timings (its console: bench/build/edges-logs/).")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (CI)")
    parser.add_argument("--reps", type=int, help="repetitions of E3 (default 5, --quick 1)")
    parser.add_argument("--samples", type=int, help="flips in E1 and E2 (default 1000, --quick 20)")
    parser.add_argument("--only", help="comma-separated scenarios to run, e.g. E1,E2")
    parser.add_argument("--conns", help="E3's numbers of connections, comma-separated (default 1,10,100,1000)")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    cfg.reps = args.reps or cfg.reps
    cfg.samples = args.samples or cfg.samples
    if args.conns:
        cfg.conns = tuple(int(n) for n in args.conns.split(","))
    only = run.chosen_scenarios(parser, args.only, SCENARIOS)

    started = time.monotonic()
    run.SERVER_CPU, run.LOADGEN_CPU = run.plan_cpus()
    if run.LOADGEN_CPU is not None:
        os.sched_setaffinity(0, {run.LOADGEN_CPU})
    run.raise_nofile(4096)
    run.LOGS = LOGS  # run.py's servers log here too
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    try:
        if "E3" in only:
            run.build_c_programs()
        out = run.run_each(only, lambda name: SCENARIOS[name](cfg))
    except run.BENCH_FAILURES as e:
        return run.bench_failed(e)
    finally:
        run.stop_all()
    RESULTS.write_text(json.dumps({"config": {"samples": cfg.samples, "poll_interval": cfg.poll_interval,
                                              "reps": cfg.reps}, "results": out}, indent=1))  # fmt: skip
    print(run.render(build_rows(out, cfg, judge=not args.quick), HEADER))
    print(notes(out, cfg))
    print(f"Total bench time {time.monotonic() - started:.0f} s; raw results {RESULTS}.")
    return 0


if __name__ == "__main__":
    run.ensure_interpreter()
    sys.exit(main())
