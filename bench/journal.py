#!/usr/bin/env python3
"""
What one append costs in a journal, empty and full (J1):

    .venv/bin/python bench/journal.py                      # about a minute
    .venv/bin/python bench/journal.py --quick              # tiny sizes (CI)
    mkdir /tmp/before && git archive OLD_COMMIT rpisensor | tar -x -C /tmp/before
    .venv/bin/python bench/journal.py --compare /tmp/before   # the old code beside it

A journal (rpisensor/stream/journal.py, an SQLite file) is filled to each size
in the table, then appended to in batches of 10 readings as its owner does:
C{serve}'s journal keeps the newest C{--journal-max} (C{trim_to}), a full
outbox turns its oldest entries into a gap (C{drop_oldest_over}). Each
append is timed with the trim that follows it (C{time.perf_counter}, wall
time of this process alone, nothing else runs in it), on a file in a fresh
temporary directory, sync mode C{batch} as the roles run it. The median and
the 99th percentile of 500 batches are reported per size. The full sizes
hold the bound at 1,000,000 entries, the default on a Pi.

Each code base is measured in a process of its own (C{--compare} imports
the older C{rpisensor} from the directory given); a journal of the older
API (readings given as C{NewReading}) is driven through the same steps.
Raw results go to bench/build/journal-results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"

#: The goal (issue: a full journal's append costs the same as an empty one's): ms per batch.
GOAL_MS = 1.0
BATCH = 10


def _readings(module, start: int, count: int) -> list:
    """C{count} readings in the API of the journal module given (the current one or an older)."""
    ts = "2026-12-07T10:00:00.000Z"
    if hasattr(module, "NewReading"):  # the older API
        return [module.NewReading(ts, True, "button", (start + i) % 2, "Button pressed") for i in range(count)]
    from rpisensor.entries import Reading

    return [Reading(sensor="button", value=(start + i) % 2, text="Button pressed", ts=ts, synced=True)
            for i in range(count)]  # fmt: skip


def worker(size: int, bound: int, kind: str, batches: int) -> dict:
    """Fill a journal to C{size} entries and time C{batches} appends with their trims (in this process)."""
    import rpisensor.stream.journal as module

    with tempfile.TemporaryDirectory(prefix="rpisensor-journal-bench-") as directory:
        journal = module.Journal(os.path.join(directory, "journal.sqlite"), max_entries=bound)
        journal.open()
        made = 0
        while made < size:
            step = min(10_000, size - made)
            journal.append(_readings(module, made, step))
            made += step
        times = []
        for i in range(batches):
            readings = _readings(module, made + i * BATCH, BATCH)
            began = time.perf_counter()
            journal.append(readings)
            if kind == "serve":
                journal.trim_to(bound)
            else:
                journal.drop_oldest_over(bound, "outbox full")
            times.append((time.perf_counter() - began) * 1000)
        journal.close()
    times.sort()
    return {
        "size": size,
        "kind": kind,
        "median_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


def measure(code: Path, size: int, bound: int, kind: str, batches: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    command = [sys.executable, __file__, "--worker", f"{size},{bound},{kind},{batches}"]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: every code path in seconds")
    parser.add_argument("--compare", type=Path, help="a directory holding an older rpisensor package")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        size, bound, kind, batches = args.worker.split(",")
        print(json.dumps(worker(int(size), int(bound), kind, int(batches))))
        return 0
    bound = 2_000 if args.quick else 1_000_000
    sizes = [0, bound * 3 // 10, bound]
    batches = 50 if args.quick else 500
    codes = {"now": ROOT}
    if args.compare is not None:
        codes = {"before": args.compare.resolve(), **codes}
    results = []
    for kind in ("serve", "outbox"):
        for size in sizes:
            for name, code in codes.items():
                result = measure(code, size, bound, kind, batches)
                result["code"] = name
                results.append(result)
                print(f"  {kind} journal at {size:,} entries ({name}): median {result['median_ms']:.3f} ms,"
                      f" p99 {result['p99_ms']:.3f} ms", file=sys.stderr, flush=True)  # fmt: skip
    BUILD.mkdir(exist_ok=True)
    (BUILD / "journal-results.json").write_text(json.dumps(results, indent=2))
    print(f"| journal | entries held | {' | '.join(f'{n}: median / p99 ms per batch of {BATCH}' for n in codes)} |")
    print(f"|---|---|{'---|' * len(codes)}")
    for kind in ("serve", "outbox"):
        for size in sizes:
            cells = []
            for name in codes:
                [r] = [r for r in results if r["kind"] == kind and r["size"] == size and r["code"] == name]
                cells.append(f"{r['median_ms']:.3f} / {r['p99_ms']:.3f}")
            print(f"| {kind} | {size:,}{' (full)' if size == bound else ''} | {' | '.join(cells)} |")
    full = [r for r in results if r["code"] == "now" and r["size"] == bound]
    met = all(r["median_ms"] <= GOAL_MS for r in full)
    print(f"\nGoal: a full journal's append <= {GOAL_MS} ms per batch (median): {'met' if met else 'MISSED'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
