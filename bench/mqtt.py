#!/usr/bin/env python3
"""
The MQTT benchmark (report --mqtt -> Mosquitto), one command, one table:

    .venv/bin/python bench/mqtt.py            # full sizes, about 4 minutes
    .venv/bin/python bench/mqtt.py --quick    # every scenario at tiny sizes (CI)

Four scenarios against a real Mosquitto (Debian's, default settings: receive
maximum 20, persistence off) started by the bench on 127.0.0.1, pinned to
CPU 0 with this script's subscriber; the publishers to CPU 1 (when the machine
has two):

  M1 throughput: N readings waiting in a reporter's outbox, published with
     QoS 1, against the plain paho publisher a user writes
     (bench/peers/paho_publisher.py: loop_start, publish in a loop) sending
     the same JSON; the two alternate, on the same broker, in the same run.
  M2 catch-up: an hour's outage at 10 readings/s, 36,000 readings in the
     outbox, published once the broker is back.
  M3 a reading to its retained state: a simulated button changing ~3 times
     a second; for each change, from the reading's time (taken by the Pi)
     to the arrival of its state message at a subscriber.
  M4 memory: the reporter's peak RSS (VmHWM) holding a 1,000,000-reading
     backlog, while the broker is away and then while it catches up.

Rates are measured where a consumer sees them: a subscriber (QoS 0, in this
process) timestamps the first and the last of the N messages; the rate is
(N - 1) over that time. Each publisher's CPU over the same time is measured
too (/proc/PID/stat), per reading. Exits non-zero when the bench itself fails (a process
does not start, a reading is missing); goals are reported, never enforced.
Raw results go to bench/build/mqtt-results.json, logs to bench/build/logs-mqtt/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
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
    pinned,
    plan_cpus,
    proc_cpu_seconds,
    render,
    run_each,
)

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
WORK = BUILD / "mqtt"
LOGS = BUILD / "logs-mqtt"
PYTHON = sys.executable
TWISTD = str(Path(sys.executable).parent / "twistd")
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
HEADER = ["scenario", "metric", "result", "goal", "goal met?", "notes"]


@dataclass
class Config:
    m1_readings: int
    m1_reps: int
    m2_readings: int
    m3_duration: float
    m4_readings: int
    m4_drain: float


FULL = Config(m1_readings=100_000, m1_reps=3, m2_readings=36_000, m3_duration=60.0, m4_readings=1_000_000,
              m4_drain=20.0)  # fmt: skip
QUICK = Config(m1_readings=2_000, m1_reps=1, m2_readings=2_000, m3_duration=3.0, m4_readings=20_000,
               m4_drain=2.0)  # fmt: skip

BROKER_CPU: int | None = None
CLIENT_CPU: int | None = None
_running: list[subprocess.Popen] = []


def start(name: str, command: list[str], cwd: Path, cpu: int | None) -> tuple[subprocess.Popen, Path]:
    log = LOGS / f"{name}.log"
    out = open(log, "wb")
    popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                             preexec_fn=pinned(cpu))  # fmt: skip
    out.close()
    _running.append(popen)
    return popen, log


def stop(popen: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    if popen.poll() is None:
        popen.send_signal(signum)
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    if popen in _running:
        _running.remove(popen)


def wait_for(what: str, check, timeout: float = 120.0, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto with its defaults but the listener (and, as root, its user)."""

    def __init__(self) -> None:
        if MOSQUITTO is None:
            raise BenchError("needs Debian's mosquitto (apt-get install mosquitto)")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="rpisensor-bench-mosquitto-"))
        os.chmod(self.directory, 0o755)
        config = self.directory / "mosquitto.conf"
        # Defaults but one: no limit on what waits for the bench's own subscriber (with 1000, the
        # default, Mosquitto drops what a Python subscriber cannot take as fast as it comes).
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_queued_messages 0"]  # fmt: skip
        if os.geteuid() == 0:
            lines.append("user mosquitto" if _user_exists("mosquitto") else "user nobody")
        config.write_text("\n".join(lines) + "\n")
        os.chmod(config, 0o644)
        self.popen, self.log = start("mosquitto", [MOSQUITTO, "-c", str(config)], self.directory, BROKER_CPU)
        wait_for("mosquitto to listen", self._up, 20)

    def _up(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def close(self) -> None:
        stop(self.popen)
        shutil.rmtree(self.directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Watcher:
    """A paho subscriber (QoS 0) timestamping every message on its topics, with the wall clock."""

    def __init__(self, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt

        self.times: dict[str, list[tuple[float, bytes]]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-watch-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(topic, 0) for topic in topics])
        self.client.loop_start()
        if not subscribed.wait(10):
            raise BenchError("the watcher could not subscribe")

    def _message(self, client, userdata, message) -> None:
        now = time.time()
        with self._lock:
            self.times.setdefault(message.topic, []).append((now, bytes(message.payload)))

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.times.get(topic, ()))

    def got(self, topic: str) -> list[tuple[float, bytes]]:
        with self._lock:
            return list(self.times.get(topic, ()))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def fill_outbox(path: Path, count: int, interval: float = 0.1) -> None:
    """C{count} readings in a new outbox, through the journal's own API, closed cleanly."""
    from rpisensor.entries import Reading
    from rpisensor.stream.journal import Journal
    from rpisensor.wire.v2 import format_timestamp

    journal = Journal(path, max_entries=max(count + 10, 1_000_000))
    journal.open()
    start = time.time() - count * interval
    for base in range(0, count, 20_000):
        journal.append([
            Reading(ts=format_timestamp(start + i * interval), synced=True, sensor="button", value=i % 2,
                    text="Button pressed" if i % 2 else "Button released")
            for i in range(base + 1, min(count, base + 20_000) + 1)
        ])  # fmt: skip
    journal.close(clean=True)


def reporter(
    name: str, work: Path, port: int, device: str, extra: list[str], status: str | None = None
) -> tuple[subprocess.Popen, Path]:
    return start(name, [
        TWISTD, "-n", "--pidfile=", "rpisensor", "report", "--mqtt", f"mqtt://127.0.0.1:{port}", "--gpio", "sim",
        "--device", device, "--outbox", "outbox.sqlite", "--status-listen", f"unix:{status}" if status else "none",
        "--mqtt-discovery", "none", *extra,
    ], work, CLIENT_CPU)  # fmt: skip


def waiting_in_outbox(path: str) -> int | None:
    """The reporter's status line's C{outbox=} (readings not yet acknowledged), or None if it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
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
    found = re.search(rb"outbox=(\d+)", reply)
    return int(found.group(1)) if found else None


def fresh(name: str) -> Path:
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def rate_of(times: list[tuple[float, bytes]], count: int) -> tuple[float, float]:
    """(readings/s, seconds) from the first to the last of C{count} distinct messages."""
    seqs = {json.loads(payload)["seq"] for _, payload in times}
    if len(seqs) < count:
        raise BenchError(f"the watcher got {len(seqs)} distinct readings of {count}")
    seconds = times[-1][0] - times[0][0]
    return (count - 1) / seconds, seconds


def drain_outbox(broker: Broker, name: str, count: int) -> dict:
    """
    A reporter with C{count} readings waiting publishes them all: timed from the
    first at the watcher to the reporter's status saying that none is left
    unacknowledged (asked every 5 ms), and, as a check, at the watcher.
    """
    work = fresh(name)
    fill_outbox(work / "outbox.sqlite", count)
    device = f"bench-{name}"
    topic = f"rpisensor/{device}/stream"
    sockets = Path(tempfile.mkdtemp(prefix="rpisensor-bench-mqtt-"))  # a unix socket's path must be short
    status = str(sockets / "status.sock")
    watcher = Watcher(broker.port, [topic])
    popen, log = reporter(name, work, broker.port, device, ["--on-change", "--interval", "3600"], status)
    try:
        wait_for(f"{name}: the first reading at the watcher", lambda: watcher.count(topic) > 0, 60, 0.001)
        cpu = proc_cpu_seconds(popen.pid)
        wait_for(f"{name}: {count} readings at the watcher", lambda: watcher.count(topic) >= count, 600, 0.005)
        cpu = proc_cpu_seconds(popen.pid) - cpu
        # (asked only now: building a status line reads the outbox, which would cost the run)
        wait_for(f"{name}: every reading acknowledged", lambda: waiting_in_outbox(status) == 0, 60, 0.05)
        time.sleep(0.2)  # repeats, if any, arrive too
        per_second, seconds = rate_of(watcher.got(topic), count)
        repeats = watcher.count(topic) - count
    finally:
        watcher.close()
        stop(popen)
        shutil.rmtree(sockets, ignore_errors=True)
    return {"per_second": per_second, "seconds": seconds, "repeats": repeats, "cpu_us": 1e6 * cpu / count,
            "cpu_share": cpu / seconds}  # fmt: skip


def plain_paho(broker: Broker, count: int, rep: int) -> dict:
    topic = "bench/plain-paho"
    watcher = Watcher(broker.port, [topic])
    popen, log = start(f"m1-paho-{rep}", [PYTHON, str(HERE / "peers" / "paho_publisher.py"), str(broker.port),
                                          topic, str(count)], WORK, CLIENT_CPU)  # fmt: skip
    try:
        wait_for("the plain paho publisher's first message", lambda: watcher.count(topic) > 0, 60, 0.001)
        cpu = proc_cpu_seconds(popen.pid)
        wait_for("the plain paho publisher's messages", lambda: watcher.count(topic) >= count, 600, 0.005)
        cpu = proc_cpu_seconds(popen.pid) - cpu
        popen.wait(60)
        seen_per_second, _ = rate_of(watcher.got(topic), count)
    finally:
        watcher.close()
        stop(popen)
    if "PAHO-DONE" not in log.read_text():
        raise BenchError(f"the plain paho publisher did not finish (log {log})")
    per_second, seconds = seen_per_second, (count - 1) / seen_per_second
    return {"per_second": per_second, "seconds": seconds, "cpu_us": 1e6 * cpu / count, "cpu_share": cpu / seconds}


# ---------------------------------------------------------------- scenarios


def m1(cfg: Config, broker: Broker) -> dict:
    runs = {"rpisensor": [], "paho": []}
    for rep in range(cfg.m1_reps):
        runs["rpisensor"].append(drain_outbox(broker, f"m1-{rep}", cfg.m1_readings))
        runs["paho"].append(plain_paho(broker, cfg.m1_readings, rep))
    ours = statistics.median(r["per_second"] for r in runs["rpisensor"])
    theirs = statistics.median(r["per_second"] for r in runs["paho"])
    def median(side, key):
        return statistics.median(r[key] for r in runs[side])

    return {"runs": runs, "rpisensor": ours, "paho": theirs, "ratio": ours / theirs,
            "cpu_us_rpisensor": median("rpisensor", "cpu_us"), "cpu_us_paho": median("paho", "cpu_us"),
            "share_rpisensor": median("rpisensor", "cpu_share"), "share_paho": median("paho", "cpu_share")}  # fmt: skip


def m2(cfg: Config, broker: Broker) -> dict:
    return drain_outbox(broker, "m2", cfg.m2_readings)


def m3(cfg: Config, broker: Broker) -> dict:
    work = fresh("m3")
    device = "bench-m3"
    base = f"rpisensor/{device}"
    watcher = Watcher(broker.port, [f"{base}/stream", f"{base}/button/state"])
    popen, log = reporter("m3", work, broker.port, device, ["--on-change", "--sim-pattern", "button=0.137,0.173"])
    try:
        wait_for("the reporter's first state", lambda: watcher.count(f"{base}/button/state") >= 2, 30)
        time.sleep(cfg.m3_duration)
    finally:
        stop(popen)
        watcher.close()
    readings = [json.loads(payload) for _, payload in watcher.got(f"{base}/stream")]
    states = watcher.got(f"{base}/button/state")
    by_value = iter(states)
    latencies = []
    for reading in readings[1:]:  # (the first may predate the watcher)
        taken = datetime.fromisoformat(reading["ts"].replace("Z", "+00:00")).timestamp()
        wanted = b"ON" if reading["value"] else b"OFF"
        for arrived, payload in by_value:
            if payload == wanted and arrived >= taken - 0.002:
                latencies.append(1000 * (arrived - taken))
                break
        else:
            raise BenchError(f"no state message for reading {reading['seq']}")
    latencies.sort()
    if len(latencies) < 5:
        raise BenchError(f"M3: only {len(latencies)} changes")
    return {"changes": len(latencies), "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "max": latencies[-1]}


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError(f"no VmHWM for process {pid}")


def m4(cfg: Config, broker: Broker) -> dict:
    work = fresh("m4")
    count = cfg.m4_readings
    fill_outbox(work / "outbox.sqlite", count)
    device = "bench-m4"
    away = free_port()  # nothing listens: the broker is away
    popen, log = reporter("m4-away", work, away, device, ["--on-change", "--interval", "3600", "--max-delay", "1"])
    try:
        wait_for("the reporter to try the broker", lambda: "Could not connect" in log.read_text(errors="replace"), 60)
        time.sleep(2)
        away_kib = vm_hwm_kib(popen.pid)
    finally:
        stop(popen)
    topic = f"rpisensor/{device}/stream"
    watcher = Watcher(broker.port, [topic])
    popen, log = reporter("m4-drain", work, broker.port, device, ["--on-change", "--interval", "3600"])
    try:
        wait_for("the catch-up to begin", lambda: watcher.count(topic) > 0, 60)
        time.sleep(cfg.m4_drain)
        drain_kib = vm_hwm_kib(popen.pid)
        published = watcher.count(topic)
    finally:
        stop(popen)
        watcher.close()
    return {"away_mib": away_kib / 1024, "drain_mib": drain_kib / 1024, "published": published}


SCENARIOS = {"M1": m1, "M2": m2, "M3": m3, "M4": m4}


def verdict(met: bool, judge: bool) -> str:
    return ("met" if met else "**missed**") if judge else "n/a (quick)"


def build_table(results: dict, cfg: Config, judge: bool) -> list[list[str]]:
    rows = []
    if "M1" in results:
        r = results["M1"]
        ok = r["ratio"] >= 1.0 and r["rpisensor"] >= 5000
        rows.append(["M1 outbox -> Mosquitto, QoS 1", "readings/s; / plain paho",
                     f"{fmt(r['rpisensor'], 'int')}; {fmt(r['ratio'], 'x')}", ">= 1.0x and >= 5,000/s",
                     verdict(ok, judge),
                     f"plain paho {fmt(r['paho'], 'int')}/s; medians of {cfg.m1_reps} alternating runs of "
                     f"{cfg.m1_readings:,}; CPU per reading {r['cpu_us_rpisensor']:.0f} and "
                     f"{r['cpu_us_paho']:.0f} µs, busy {100 * r['share_rpisensor']:.0f}% and "
                     f"{100 * r['share_paho']:.0f}% of a CPU"])  # fmt: skip
    if "M2" in results:
        r = results["M2"]
        rows.append(["M2 catch-up", f"{cfg.m2_readings:,} readings", f"{r['seconds']:.2f} s", "<= 10 s",
                     verdict(r["seconds"] <= 10, judge), f"{fmt(r['per_second'], 'int')} readings/s"])  # fmt: skip
    if "M3" in results:
        r = results["M3"]
        rows.append(["M3 reading -> retained state", "p50 / p99", f"{r['p50']:.1f} / {r['p99']:.1f} ms",
                     "p99 <= 20 ms", verdict(r["p99"] <= 20, judge),
                     f"{r['changes']} changes, max {r['max']:.1f} ms"])  # fmt: skip
    if "M4" in results:
        r = results["M4"]
        peak = max(r["away_mib"], r["drain_mib"])
        rows.append(["M4 RSS, backlog", f"{cfg.m4_readings:,} readings", f"{peak:.1f} MiB", "<= 60 MB",
                     verdict(peak * 1.048576 <= 60, judge),
                     f"away {r['away_mib']:.1f} MiB, catching up {r['drain_mib']:.1f} MiB "
                     f"({r['published']:,} published in {cfg.m4_drain:g} s)"])  # fmt: skip
    return rows


def main() -> int:
    global BROKER_CPU, CLIENT_CPU
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, goals not judged (CI)")
    parser.add_argument("--only", help="comma-separated scenarios to run, e.g. M1,M3")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    only = chosen_scenarios(parser, args.only, SCENARIOS)
    if MOSQUITTO is None:
        print("bench/mqtt.py: skipped: needs Debian's mosquitto (apt-get install mosquitto)", file=sys.stderr)
        return 0
    started = time.monotonic()
    BROKER_CPU, CLIENT_CPU = plan_cpus()
    if BROKER_CPU is not None:
        # This script's subscriber keeps off the publishers' CPU: there it would take a share
        # of it from a one-thread publisher (the reporter) and less from a two-thread one (paho).
        os.sched_setaffinity(0, {BROKER_CPU})
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    WORK.mkdir(parents=True, exist_ok=True)
    broker = None
    try:
        broker = Broker()
        results = run_each(only, lambda name: SCENARIOS[name](cfg, broker))
    except BENCH_FAILURES as e:
        return bench_failed(e)
    finally:
        if broker is not None:
            broker.close()
        for popen in list(_running):
            stop(popen, signal.SIGKILL)
    (BUILD / "mqtt-results.json").write_text(json.dumps({"config": cfg.__dict__, "results": results}, indent=1))
    print(render(build_table(results, cfg, judge=not args.quick), HEADER))
    print(f"Total bench time {time.monotonic() - started:.0f} s; raw results "
          f"{(BUILD / 'mqtt-results.json').relative_to(ROOT)}; logs {LOGS.relative_to(ROOT)}/.")  # fmt: skip
    return 0


if __name__ == "__main__":
    ensure_interpreter()
    sys.exit(main())
