#!/usr/bin/env python3
"""
The fleet benchmark: collectors writing into one PostgreSQL, one command,
one table:

    .venv/bin/python bench/fleet.py            # full sizes, about 7 minutes
    .venv/bin/python bench/fleet.py --quick    # every scenario at tiny sizes (CI)

A PostgreSQL server of its own (tests/postgres.py: initdb into a temporary
directory, fsync on, the defaults otherwise) on a Unix socket; real twistd
collectors and reporters on 127.0.0.1; nothing pinned (PostgreSQL needs both
CPUs as much as the collector).

  W  how a batch is written exactly once, in-process, batches of 1 to 5,000
     readings: INSERT ... ON CONFLICT DO NOTHING (one statement, the rows as
     arrays) against the store's per-stream watermark with a binary COPY (the
     store's own code), and a plain COPY of the same rows, the physical
     reference.
  F1 200 reporters at 10 readings/s into one collector (bench/peers/
     stream_loadgen.py, each reporter its own connection and stream, every ack
     checked): all stored once, the collector's CPU, send-to-ack latency.
  F2 ingest ceiling: 4 reporters with a backlog each drain into one
     collector, then into two (two reporters each): readings/s stored once.
  F3 backlog: a day offline at 10 readings/s (864,000 readings) in one
     reporter's outbox drains into one collector: seconds until all acked.
  F4 latency at 1,000 readings/s (100 reporters at 10/s): a reading's send
     to the ack that covers it, which the collector sends after the commit.
  F5 failover: reporters with --connect A --connect B (default options, a
     button toggling 20 times a second each) all on one collector, which is
     killed (SIGKILL) once it served 5 s; per reporter, the seconds from the kill until the
     database holds a reading of its stream it did not hold at the kill (the
     reporter resumed on the other collector, which asked the database where
     the stream stands). The killed one is started again, then the other is
     killed, and so on, for several rounds; p95 and max over all of them.

A missed goal is reported, never enforced; the bench exits non-zero when it
fails itself (a reading missing or doubled, a process that does not start).
Raw results go to bench/build/fleet-results.json, logs to bench/build/logs-fleet/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import streams  # noqa: E402 (bench/streams.py: processes, outboxes, CPU accounting)
from run import BENCH_FAILURES, ROOT, bench_failed, chosen_scenarios, ensure_interpreter, fmt, render, run_each  # noqa: E402
from streams import (  # noqa: E402
    PEERS, PYTHON, TWISTD, BenchError, Usage, fill_outbox, fresh, listening_port, reporter_args, start,
    status, stop, stop_all, wait_for,
)  # fmt: skip

from tests.postgres import PostgresServer, missing_reason  # noqa: E402

BUILD = HERE / "build"
streams.WORK = BUILD / "fleet"
streams.LOGS = BUILD / "logs-fleet"


@dataclass
class Config:
    w_batches: tuple[tuple[int, int, int], ...]  # (streams, readings each, batches)
    f1_reporters: int
    f1_duration: float
    f2_backlog: int  # per reporter, 4 reporters
    f3_backlog: int
    f4_duration: float
    f5_reporters: int = 20
    f5_rounds: int = 6
    f5_serve: float = 5.0  # seconds each collector serves before it is killed


FULL = Config(w_batches=((1, 1, 500), (200, 1, 100), (1, 100, 100), (10, 100, 30), (1, 1000, 30), (1, 5000, 10)),
              f1_reporters=200, f1_duration=30.0, f2_backlog=100_000, f3_backlog=864_000,
              f4_duration=30.0, f5_reporters=20, f5_rounds=6, f5_serve=5.0)  # fmt: skip
QUICK = Config(w_batches=((1, 1, 20), (10, 100, 3)), f1_reporters=10, f1_duration=2.0, f2_backlog=2_000,
               f3_backlog=4_000, f4_duration=2.0, f5_reporters=2, f5_rounds=2, f5_serve=1.0)  # fmt: skip

DB: dict = {}


# ---------------------------------------------------------------- the database


def new_database(name: str) -> str:
    """A fresh database (and role) for one scenario; its URL."""
    server: PostgresServer = DB["server"]
    return server.create(name, name)


def count(url: str, sql: str):
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(sql).fetchone()


def stored_total(url: str) -> int:
    """The readings the database holds in all (0 until the first collector has made its tables)."""
    import psycopg

    try:
        return count(url, "SELECT coalesce(sum(stored), 0) FROM streams")[0]
    except psycopg.errors.UndefinedTable:
        return 0


def check_once(url: str, expected: int, what: str) -> None:
    total, distinct = count(url, "SELECT count(*), count(DISTINCT (device, stream, seq)) FROM readings")
    if (total, distinct) != (expected, expected):
        raise BenchError(f"{what}: the database holds {total} readings ({distinct} distinct); expected {expected}")


def collector(name: str, work: Path, url: str) -> streams.Proc:
    return start(name, [TWISTD, "-n", "--pidfile=", "rpisensor", "collect", "--listen",
                        "tcp:0:interface=127.0.0.1", "--store", url], work, None)  # fmt: skip


# ---------------------------------------------------------------- W write strategies

_COLUMNS = "device, stream, seq, ts, synced, sensor, value, unit, text, peer, received, identity"
ON_CONFLICT = (
    f"INSERT INTO readings ({_COLUMNS}) SELECT * FROM unnest(%s::text[], %s::text[], %s::int8[],"
    " %s::timestamptz[], %s::bool[], %s::text[], %s::float8[], %s::text[], %s::text[], %s::text[],"
    " %s::timestamptz[], %s::text[]) ON CONFLICT DO NOTHING"
)
ON_CONFLICT_STREAMS = (
    "INSERT INTO streams (device, stream, stored) SELECT * FROM unnest(%s::text[], %s::text[], %s::int8[])"
    " ORDER BY 1, 2 ON CONFLICT (device, stream) DO UPDATE SET stored = greatest(streams.stored, excluded.stored)"
)


def w(cfg: Config) -> dict:
    """Each strategy on a fresh database, the same batches, one connection, commits as the store makes them."""
    import psycopg

    from rpisensor.store.postgresql import PostgresStore
    from rpisensor.entries import Reading
    from rpisensor.wire.v2 import format_timestamp

    def batches(streams_n, per, count, offset):
        start = time.time()
        out = []
        for b in range(count):
            out.append([
                Reading(sensor="button", value=i % 2, text="Button pressed",
                        ts=format_timestamp(start + (b * per + i) / 1000), synced=True, stream="00000000000000a1",
                        seq=b * per + i + 1, digest="0123456789abcdef", device=f"w-{offset}-{s}",
                        peer="127.0.0.1:40000", received=format_timestamp(start))
                for s in range(streams_n) for i in range(per)
            ])  # fmt: skip
        return out

    def on_conflict(connection, batch):
        rows = [(r.device, r.stream, r.seq, r.ts, r.synced, r.sensor, float(r.value), r.unit, r.text, r.peer,
                 r.received, r.identity) for r in batch]  # fmt: skip
        last = {}
        for r in batch:
            last[r.device, r.stream] = r.seq
        keys = sorted(last)
        with connection.transaction():
            connection.execute(ON_CONFLICT, [list(c) for c in zip(*rows)])
            connection.execute(ON_CONFLICT_STREAMS, [[k[0] for k in keys], [k[1] for k in keys],
                                                     [last[k] for k in keys]])  # fmt: skip

    def copy_only(connection, batch):
        from rpisensor.store import pgsql
        from rpisensor.store.postgresql import _reading_row

        with connection.transaction():
            with connection.cursor().copy(pgsql.COPY_READINGS) as copy:
                copy.set_types(pgsql.READING_TYPES)
                for r in batch:
                    copy.write_row(_reading_row(r))

    results = {}
    for n, (streams_n, per, count_) in enumerate(cfg.w_batches):
        row = {}
        for name in ("on_conflict", "watermark", "copy"):
            url = new_database(f"w{n}{name}")
            store = PostgresStore(url)
            store.open()  # the schema
            work = batches(streams_n, per, count_, n)
            if name == "watermark":
                t0 = time.perf_counter()
                for batch in work:
                    store.write(batch)
                elapsed = time.perf_counter() - t0
            else:
                with psycopg.connect(url, autocommit=True) as connection:
                    write = on_conflict if name == "on_conflict" else copy_only
                    t0 = time.perf_counter()
                    for batch in work:
                        write(connection, batch)
                    elapsed = time.perf_counter() - t0
            store.close()
            check_once(url, streams_n * per * count_, f"W {name}")
            row[name] = {"ms_per_batch": 1000 * elapsed / count_, "rows_per_s": streams_n * per * count_ / elapsed}
        results[f"{streams_n}x{per}"] = row
    return results


# ---------------------------------------------------------------- F1/F4 live load


def live(cfg_reporters: int, duration: float, name: str) -> dict:
    url = new_database(name)
    work = fresh(name)
    store_collector = collector(f"{name}-collect", work, url)
    try:
        port = listening_port(store_collector)
        lg = subprocess.Popen(
            [PYTHON, str(PEERS / "stream_loadgen.py"), "--port", str(port), "--reporters", str(cfg_reporters),
             "--rate", "10", "--duration", f"{duration:g}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        streams._running.append(lg)
        usage, cpu, lines = None, {}, []
        for line in lg.stdout:
            lines.append(line)
            if line.startswith("SENDING"):
                usage = Usage({"collector": store_collector.pid, "loadgen": lg.pid})
            elif line.startswith("SENT") and usage is not None:
                cpu = usage.end()
        lg.wait(60)
        streams._running.remove(lg)
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise BenchError(f"{name}: the load generator printed no result: {''.join(lines)}{lg.stderr.read()}")
        if lg.returncode != 0:
            raise BenchError(f"{name}: the load generator failed: {result.get('error')}")
        check_once(url, result["sent"], name)
    finally:
        stop(store_collector)
    return {**result, **cpu}


def f1(cfg: Config) -> dict:
    return live(cfg.f1_reporters, cfg.f1_duration, "f1")


def f4(cfg: Config) -> dict:
    return live(max(1, cfg.f1_reporters // 2), cfg.f4_duration, "f4")


# ---------------------------------------------------------------- F2/F3 backlogs


def drain(name: str, backlogs: int, per: int, collectors: int) -> dict:
    """C{backlogs} reporters with C{per} readings each drain into C{collectors} collectors; the time it takes."""
    url = new_database(name)
    work = fresh(name)
    procs = [collector(f"{name}-collect{i}", work, url) for i in range(collectors)]
    ports = [listening_port(p) for p in procs]
    reporters = []
    try:
        # The outboxes are filled while their reporters cannot reach a collector (a closed port) ...
        for i in range(backlogs):
            home = work / f"r{i}"
            home.mkdir()
            fill_outbox(home / "outbox.sqlite", per)
        # ... then each reporter starts, pointed at its collector, and the clock runs from the first hello.
        socks = []
        for i in range(backlogs):
            sock = str(DB["sockets"] / f"{name}-{i}.sock")
            socks.append(sock)
            reporters.append(start(f"{name}-report{i}", [TWISTD, *reporter_args(
                ports[i % collectors], f"bench-{name}-{i}", sock, ["--on-change", "--interval", "3600"])],
                work / f"r{i}", None))  # fmt: skip
        t0 = time.monotonic()
        usage = Usage({**{f"collector{i}": p.pid for i, p in enumerate(procs)}})
        total = backlogs * per
        wait_for("every reading stored", lambda: stored_total(url) >= total, procs[0], timeout=900.0, every=0.05)
        t_stored = time.monotonic()
        for sock, reporter in zip(socks, reporters):
            wait_for("the last ack", lambda: (s := status(sock)) and s.get("outbox") == "0", reporter, timeout=120.0)
        t_acked = time.monotonic()
        cpu = usage.end()
        check_once(url, total, name)
    finally:
        for p in reporters + procs:
            stop(p)
    return {"readings": total, "stored_s": t_stored - t0, "acked_s": t_acked - t0,
            "rate": total / (t_stored - t0), **cpu}  # fmt: skip


def f2(cfg: Config) -> dict:
    one = drain("f2one", 4, cfg.f2_backlog, 1)
    two = drain("f2two", 4, cfg.f2_backlog, 2)
    return {"one": one, "two": two, "ratio": two["rate"] / one["rate"]}


def f3(cfg: Config) -> dict:
    return drain("f3", 1, cfg.f3_backlog, 1)


# ---------------------------------------------------------------- F5 failover


def f5(cfg: Config) -> dict:
    url = new_database("f5")
    work = fresh("f5")
    ports = [streams.free_port(), streams.free_port()]
    collectors: list = [None, None]

    def start_collector(i: int, round_: int) -> None:
        collectors[i] = start(f"f5-collect{i}-{round_}", [
            TWISTD, "-n", "--pidfile=", "rpisensor", "collect", "--listen", f"tcp:{ports[i]}:interface=127.0.0.1",
            "--store", url,
        ], work, None)  # fmt: skip
        listening_port(collectors[i])

    def marks() -> dict[str, int]:
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            return dict(db.execute("SELECT device, stored FROM streams").fetchall())

    start_collector(0, 0)
    start_collector(1, 0)
    reporters = []
    devices = [f"bench-f5-{i}" for i in range(cfg.f5_reporters)]
    try:
        for i, device in enumerate(devices):
            home = work / f"r{i}"
            home.mkdir()
            reporters.append(start(f"f5-report{i}", [
                TWISTD, "-n", "--pidfile=", "rpisensor", "report", "--connect", f"127.0.0.1:{ports[0]}",
                "--connect", f"127.0.0.1:{ports[1]}", "--gpio", "sim", "--device", device, "--on-change",
                "--interval", "0.01", "--sim-pattern", "button=0.05,0.05", "--outbox", "outbox.sqlite",
                "--status-listen", "none",
            ], home, None))  # fmt: skip
        wait_for("every reporter storing", lambda: len(marks()) == len(devices), reporters[0], timeout=120.0)
        serving = 0  # every reporter tries A first
        samples: list[float] = []
        for round_ in range(1, cfg.f5_rounds + 1):
            # A collector that served a while (a reporter whose link died within 0.5 s of
            # connecting counts it as a failed attempt and backs off longer: not a failover).
            time.sleep(cfg.f5_serve)
            base = marks()
            wait_for("every stream moving", lambda: all(m > base[d] for d, m in marks().items()), timeout=60.0)
            victim = collectors[serving]
            victim.popen.send_signal(9)
            killed = time.monotonic()
            victim.popen.wait()
            at_kill = marks()
            resumed: dict[str, float] = {}
            while len(resumed) < len(devices) and time.monotonic() - killed < 120:
                now_marks = marks()
                now = time.monotonic()
                for device, mark in now_marks.items():
                    if device not in resumed and mark > at_kill[device]:
                        resumed[device] = now - killed
                time.sleep(0.02)
            if len(resumed) < len(devices):
                raise BenchError(f"F5 round {round_}: {len(devices) - len(resumed)} reporters did not resume in 120 s")
            samples += resumed.values()
            start_collector(serving, round_)
            serving = 1 - serving
        for proc in reporters:
            stop(proc)
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            bad = db.execute(
                "SELECT s.device FROM streams s LEFT JOIN (SELECT device, stream, count(*) n, count(DISTINCT seq) d"
                " FROM readings GROUP BY 1, 2) r USING (device, stream) WHERE r.n IS DISTINCT FROM s.stored"
                " OR r.d IS DISTINCT FROM s.stored"
            ).fetchall()  # fmt: skip
            (total,) = db.execute("SELECT count(*) FROM readings").fetchone()
        if bad:
            raise BenchError(f"F5: streams not stored exactly once up to their watermark: {bad}")
    finally:
        for proc in reporters + [c for c in collectors if c is not None]:
            stop(proc)
    return {"reporters": len(devices), "rounds": cfg.f5_rounds, "samples": len(samples),
            "p50_s": streams.percentile(samples, 0.50), "p95_s": streams.percentile(samples, 0.95),
            "max_s": max(samples), "readings": total}  # fmt: skip


SCENARIOS = {"W": w, "F1": f1, "F2": f2, "F3": f3, "F4": f4, "F5": f5}


# ---------------------------------------------------------------- the table

HEADER = ["", "what", "measured", "goal", ""]


def build_table(res: dict, judge: bool) -> list[list[str]]:
    def verdict(ok):
        return "" if not judge or ok is None else ("met" if ok else "MISSED")

    rows = []
    if "W" in res:
        for size, row in res["W"].items():
            rows.append(["W", f"batch {size} (streams x readings): on conflict / watermark+COPY / COPY",
                         " / ".join(f"{fmt(row[k]['rows_per_s'], 0)}/s" for k in ("on_conflict", "watermark", "copy")),
                         "", ""])  # fmt: skip
    if "F1" in res:
        r = res["F1"]
        rows.append(["F1", f"{r['reporters']} reporters at 10/s: stored once, collector CPU",
                     f"{r['sent']} once, {fmt(r.get('collector_cpu'), 1)}% CPU, ack p99 {fmt(r['ack_p99_ms'], 1)} ms",
                     "all once", verdict(True)])  # fmt: skip
    if "F2" in res:
        r = res["F2"]
        rows.append(["F2", "ceiling, one collector (4 backlogs)", f"{fmt(r['one']['rate'], 0)}/s", ">= 20,000/s",
                     verdict(r["one"]["rate"] >= 20_000)])  # fmt: skip
        rows.append(["F2", "ceiling, two collectors", f"{fmt(r['two']['rate'], 0)}/s ({fmt(r['ratio'], 2)}x)",
                     ">= 1.5x one", verdict(r["ratio"] >= 1.5)])  # fmt: skip
    if "F3" in res:
        r = res["F3"]
        rows.append(["F3", f"backlog of {r['readings']:,} drained", f"{fmt(r['acked_s'], 1)} s "
                     f"({fmt(r['rate'], 0)}/s)", "<= 120 s", verdict(r["acked_s"] <= 120)])  # fmt: skip
    if "F4" in res:
        r = res["F4"]
        rows.append(["F4", f"send -> commit -> ack at {r['reporters'] * 10}/s", f"p99 {fmt(r['ack_p99_ms'], 1)} ms "
                     f"(p50 {fmt(r['ack_p50_ms'], 1)})", "p99 <= 100 ms", verdict(r["ack_p99_ms"] <= 100)])  # fmt: skip
    if "F5" in res:
        r = res["F5"]
        rows.append(["F5", f"a collector killed: its {r['reporters']} reporters resume on the other "
                     f"({r['rounds']} rounds)", f"p95 {fmt(r['p95_s'], 2)} s (p50 {fmt(r['p50_s'], 2)}, "
                     f"max {fmt(r['max_s'], 2)})", "p95 <= 5 s", verdict(r["p95_s"] <= 5)])  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, goals not judged (CI)")
    parser.add_argument("--only", help="comma-separated scenarios to run, e.g. W,F3")
    args = parser.parse_args()
    reason = missing_reason()
    if reason is not None:
        print(f"fleet bench skipped: {reason}", file=sys.stderr)
        return 0
    cfg = QUICK if args.quick else FULL
    only = chosen_scenarios(parser, args.only, SCENARIOS)
    started = time.monotonic()
    shutil.rmtree(streams.LOGS, ignore_errors=True)
    streams.LOGS.mkdir(parents=True)
    DB["sockets"] = Path(tempfile.mkdtemp(prefix="rpisensor-fleet-"))
    DB["server"] = server = PostgresServer(fsync=True)
    server.start()
    try:
        results = run_each(only, lambda name: SCENARIOS[name](cfg))
    except BENCH_FAILURES as e:
        return bench_failed(e)
    finally:
        stop_all()
        server.destroy()
        shutil.rmtree(DB["sockets"], ignore_errors=True)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "fleet-results.json").write_text(json.dumps({"config": cfg.__dict__, "results": results}, indent=1))
    print(render(build_table(results, judge=not args.quick), HEADER))
    print(f"Total bench time {time.monotonic() - started:.0f} s; raw results "
          f"{(BUILD / 'fleet-results.json').relative_to(ROOT)}.")  # fmt: skip
    return 0


if __name__ == "__main__":
    ensure_interpreter()
    sys.exit(main())
