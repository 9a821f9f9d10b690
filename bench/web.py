#!/usr/bin/env python3
"""
The web page's live updates under load: many browsers' event streams on one
C{serve} whose input changes 20 times a second (a 10 Hz square wave).

    .venv/bin/python bench/web.py            # 200 event streams, 30 s measured
    .venv/bin/python bench/web.py --quick    # 20 streams, 3 s (CI: it must just run)

Measures, for each reading: the time from the change (the reading's C{ts},
taken by the server when the simulated pin changed) to its receipt by the
last of the streams; prints the median, p99 and worst, the server's CPU
(user + system over the measured window) and its memory per stream (resident
memory with the streams open minus before them, divided by their number).
See bench/README.md ("The web page's event streams") for the method.
Raw results go to bench/build/web.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
PATTERN = "button=0.05,0.05"  # 50 ms pressed, 50 ms released: 20 changes a second


def cpus() -> tuple[int | None, int | None]:
    """The server on CPU 0, this script on CPU 1, when there are two."""
    available = sorted(os.sched_getaffinity(0))
    return (available[0], available[1]) if len(available) >= 2 else (None, None)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(streams: int, cpu: int | None, log_path: Path) -> tuple[subprocess.Popen, int]:
    twistd = Path(sys.executable).parent / "twistd"
    command = [
        str(twistd), "-n", "--pidfile=", "rpisensor", "serve", "--gpio", "sim", "--journal", "none",
        "--listen", "tcp:0:interface=127.0.0.1", "--sim-pattern", PATTERN, "--web", "tcp:0",
        "--web-max-clients", str(streams + 10), "--web-max-clients-per-host", str(streams + 10),
        "--max-connections", str(streams + 100),
    ]  # fmt: skip
    log = open(log_path, "wb")
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.mkdtemp(),
                               preexec_fn=preexec, stdin=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    pattern = re.compile(r"Listening on tcp:0:interface=127\.0\.0\.1 \(port (\d+)\)")
    while time.monotonic() < deadline:
        ports = pattern.findall(log_path.read_text(errors="replace"))
        if len(ports) == 2:
            return process, int(ports[1])  # the second listener is the web's
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the server did not start:\n{log_path.read_text(errors='replace')}")


class Stream:
    """One browser's event stream, read without a browser: GET /events, then its events."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        self.sock.setblocking(False)
        self.buffer = b""
        self.headers_done = False

    def read(self, now: float, receipts: dict[int, list]) -> bool:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.buffer += data
        if not self.headers_done:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return True
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"an event stream was refused: {head[:80]!r}")
            self.headers_done, self.buffer = True, rest
        # Chunked transfer: the event lines are whole within the stream; chunk sizes are lines of hex.
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data: {\"id\""):
                event = json.loads(line[6:])
                entry = receipts.setdefault(event["id"], [event["ts"], 0, now])
                entry[1] += 1
                entry[2] = max(entry[2], now)
        return True


def iso_seconds(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def run(streams: int, warmup: float, duration: float) -> dict:
    BUILD.mkdir(exist_ok=True)
    server_cpu, own_cpu = cpus()
    if own_cpu is not None:
        os.sched_setaffinity(0, {own_cpu})
    process, port = start_server(streams, server_cpu, BUILD / "web-server.log")
    try:
        time.sleep(1.0)  # started, its first readings journaled
        rss_before = rss_kib(process.pid)
        selector = selectors.DefaultSelector()
        opened = [Stream(port) for _ in range(streams)]
        for stream in opened:
            selector.register(stream.sock, selectors.EVENT_READ, stream)
        receipts: dict[int, list] = {}
        start = time.monotonic()
        measuring = False
        cpu_start = wall_start = 0.0
        first_measured = None
        while True:
            elapsed = time.monotonic() - start
            if not measuring and elapsed >= warmup:
                measuring = True
                cpu_start, wall_start = proc_cpu_seconds(process.pid), time.monotonic()
                first_measured = max(receipts) + 1 if receipts else 0
            if elapsed >= warmup + duration:
                break
            for key, _ in selector.select(timeout=0.1):
                if not key.data.read(time.time(), receipts):
                    raise SystemExit("the server closed an event stream")
        cpu = proc_cpu_seconds(process.pid) - cpu_start
        wall = time.monotonic() - wall_start
        rss_after = rss_kib(process.pid)
        last_measured = max(receipts) - 1  # the newest may still be on its way to some streams
        measured = [
            (entry[2] - iso_seconds(entry[0])) * 1000
            for seq, entry in receipts.items()
            if first_measured <= seq <= last_measured
        ]
        complete = sum(1 for seq, e in receipts.items() if first_measured <= seq <= last_measured and e[1] == streams)
        for stream in opened:
            stream.sock.close()
    finally:
        process.terminate()
        process.wait(10)
    measured.sort()
    return {
        "streams": streams,
        "changes_per_second": 20,
        "readings_measured": len(measured),
        "readings_every_stream_got": complete,
        "latency_ms_median": statistics.median(measured),
        "latency_ms_p99": measured[min(len(measured) - 1, int(len(measured) * 0.99))],
        "latency_ms_max": measured[-1],
        "server_cpu_percent": 100 * cpu / wall,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "kib_per_stream": (rss_after - rss_before) / streams,
        "pinned": server_cpu is not None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 streams for 3 s (CI)")
    parser.add_argument("--streams", type=int, help="event streams (default 200; --quick 20)")
    args = parser.parse_args()
    streams = args.streams or (20 if args.quick else 200)
    warmup, duration = (1.0, 3.0) if args.quick else (5.0, 30.0)
    result = run(streams, warmup, duration)
    (BUILD / "web.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['streams']} event streams, {result['changes_per_second']} changes/s, "
          f"{result['readings_measured']} readings measured "
          f"({result['readings_every_stream_got']} reached every stream)")  # fmt: skip
    print(f"change -> last stream's receipt: median {result['latency_ms_median']:.1f} ms, "
          f"p99 {result['latency_ms_p99']:.1f} ms, max {result['latency_ms_max']:.1f} ms")  # fmt: skip
    print(f"server CPU {result['server_cpu_percent']:.1f} % of one core; memory "
          f"{result['kib_per_stream']:.1f} KiB per stream (RSS {result['rss_kib_before']} -> "
          f"{result['rss_kib_after']} KiB)")  # fmt: skip
    if result["readings_every_stream_got"] != result["readings_measured"]:
        print("error: some stream missed a reading", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
