#!/usr/bin/env python3
"""
What rpisensor costs where the smallest Pi feels it, counted in what does not
depend on this machine's speed: instructions, CPU time per unit of work, bytes.

    .venv/bin/python bench/cost.py            # full run, about 6 minutes
    .venv/bin/python bench/cost.py --quick    # every scenario at tiny sizes (CI), about a minute

K1  instructions per `go` round trip (callgrind, user space, one client): rpisensor edge-tracked
    and through its read pool, the minimal Twisted server answering inline, Twisted with
    deferToThread, asyncio with a thread pool, a thread per connection.
K2  instructions from exec until `serve` listens and is idle (callgrind); bare `twistd --help`
    and the minimal Twisted server until it listens, for reference.
K3  memory of idle `serve`, `report` and `collect` (VmRSS, PSS), the minimal Twisted server's,
    and what takes it: the role's own modules imported step by step in a fresh interpreter.
K4  where a round trip's CPU goes at 100 connections: user and kernel time per round trip
    (/proc), system calls per round trip (strace -c -f), rpisensor and the threaded server.
P1  polled RPi.GPIO on the emulated Pi: serve's CPU with 4 inputs at --poll-interval 0.01, idle.
P2  2 ms pulses at --poll-interval 0.001 on the emulated Pi: how many a v2 subscriber sees.
P3  pipelined `go` on --gpio rpi on the emulated Pi: 10,000 go (and a ping after every tenth,
    which checks the order) in one write; the time until the last reply.

--compare DIR measures rpisensor from another checkout too (its directory first on PYTHONPATH,
e.g. after `git archive OLD rpisensor | tar -x -C DIR`), in the same run: K1 to K3, P1 to P3.
bench/README.md has the method; raw results go to bench/build/cost-results.json, logs and
callgrind's files to bench/build/cost/. Exits non-zero when the bench itself fails (a wrong
reply, a server that does not start); goals are reported, never enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
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

import run  # noqa: E402  (bench/run.py: servers, load generator, pinning)

OUT = run.BUILD / "cost"
RESULTS = run.BUILD / "cost-results.json"
LISTENING = re.compile(r"\(port (\d+)\)|Listening on unix:")
#: callgrind's user-space instruction count in a dump file.
SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


@dataclass
class Config:
    roundtrips: int  # K1, per server, after the warm-up
    warmup: int  # K1
    k1_servers: tuple[str, ...]
    k2: bool  # start-up counts of the references too
    settle: float  # K3: seconds after start-up before memory is read
    k4_duration: float
    idle_seconds: float  # P1
    pulses: int  # P2
    pipelined: int  # P3: go per burst
    bursts: int  # P3


K1_ALL = ("rpisensor", "rpisensor pool", "tw-inline", "tw-naive", "asyncio", "threaded")
FULL = Config(roundtrips=3000, warmup=200, k1_servers=K1_ALL, k2=True, settle=3.0, k4_duration=2.0,
              idle_seconds=10.0, pulses=200, pipelined=10_000, bursts=3)  # fmt: skip
QUICK = Config(roundtrips=100, warmup=20, k1_servers=("rpisensor", "tw-inline"), k2=False, settle=1.0,
               k4_duration=0.3, idle_seconds=1.0, pulses=10, pipelined=1000, bursts=1)  # fmt: skip

#: Simulated pins with failures injected play a sensor that must be read (bench/edges.py's E3).
POOLED_OPTIONS = ["--sim-fail-every", "1000000000"]
#: The compared checkout (--compare), or None.
COMPARE: Path | None = None
BEFORE = "before"


# ---------------------------------------------------------------- processes


def code_env(version: str) -> dict[str, str]:
    """The environment of a process of rpisensor C{version} ("now" or L{BEFORE})."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONHASHSEED"] = "0"  # the same hashes, the same instructions, run to run
    env["PYTHONUNBUFFERED"] = "1"
    if version == BEFORE:
        env["PYTHONPATH"] = str(COMPARE)
    return env


def compile_bytecode() -> None:
    """Bytecode for every module, as an installed package has it (not compiled at each start)."""
    dirs = [ROOT / "rpisensor", ROOT / "twisted", HERE / "peers"] + ([COMPARE / "rpisensor"] if COMPARE else [])
    subprocess.run([run.PYTHON, "-m", "compileall", "-q", *map(str, dirs)], env=code_env("now"),
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def versions() -> list[str]:
    return ["now", BEFORE] if COMPARE is not None else ["now"]


def label(name: str, version: str) -> str:
    return name if version == "now" else f"{name} ({BEFORE})"


#: The minimal Twisted server in a process where pyOpenSSL cannot be imported, as if Twisted had been
#: installed without its tls extra: Twisted's TCP then loads no TLS stack (K2, K3's references).
NO_TLS = "tw-inline, no pyOpenSSL"
_NO_TLS_CODE = (
    "import runpy, sys; sys.modules['OpenSSL'] = None; sys.path.insert(0, {peers!r}); "
    "sys.argv = [{script!r}, '--port', '0', '--latency', '0']; runpy.run_path({script!r}, run_name='__main__')"
)


def server_argv(name: str) -> list[str]:
    """The command line of a K1 server (run.py's, with the edge-tracked or pooled rpisensor)."""
    if name == NO_TLS:
        peers = HERE / "peers"
        code = _NO_TLS_CODE.format(peers=str(peers), script=str(peers / run.PEER_SCRIPTS["tw-inline"]))
        return [run.PYTHON, "-c", code]
    if name == "rpisensor":
        return run.server_command("rpisensor", 0.0, False, ["--journal", "none"])
    if name == "rpisensor pool":
        return run.server_command("rpisensor", 0.0, False, ["--journal", "none", *POOLED_OPTIONS])
    return run.server_command(name, 0.0, False, [])


def start(name: str, argv: list[str], version: str = "now", cwd: Path = OUT, cpu: int | None = None,
          wait: bool = True, extra_env: dict | None = None) -> run.Server:  # fmt: skip
    log = OUT / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            env={**code_env(version), **(extra_env or {})},
            preexec_fn=run.pinned(run.SERVER_CPU if cpu is None else cpu),
        )  # fmt: skip
    run._running.append(proc)
    server = run.Server(name, proc, log)
    if wait:
        server.port = wait_listening(server)
    return server


def wait_listening(server: run.Server, timeout: float = 120.0) -> int:
    """Wait for the server's "Listening" line; its TCP port (0 for a unix socket)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LISTENING.search(run.log_text(server))
        if found:
            return int(found.group(1) or 0)
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = "\n".join(run.log_text(server).splitlines()[-15:])
    raise run.BenchError(f"{server.name} did not start listening (log {server.log}):\n{tail}")


def wait_quiet(server: run.Server, quiet: float = 1.0, timeout: float = 120.0) -> None:
    """Wait until the server's log has not grown for C{quiet} seconds: its start-up is done."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = server.log.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)
    raise run.BenchError(f"{server.name} kept logging for {timeout:g} s (log {server.log})")


# ---------------------------------------------------------------- callgrind


def callgrind(argv: list[str], out: Path, at_start: bool) -> list[str]:
    options = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"]
    return options + ([] if at_start else ["--instr-atstart=no"]) + argv


def callgrind_control(flag: str, pid: int) -> None:
    result = subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or "OK" not in result.stdout:
        raise run.BenchError(f"callgrind_control {flag} {pid} failed: {result.stdout}{result.stderr}")


def dumped(out: Path, pid: int, before: set[Path]) -> int:
    """The instructions in the dump C{callgrind_control -d} just wrote (a new file)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = sorted(set(out.parent.glob(f"{out.name}.{pid}.*")) - before)
        for path in new:
            found = SUMMARY.search(path.read_text(errors="replace"))
            if found:
                return int(found.group(1))
        time.sleep(0.05)
    raise run.BenchError(f"no callgrind dump for process {pid} under {out}")


def dump(out: Path, pid: int) -> int:
    before = set(out.parent.glob(f"{out.name}.{pid}.*"))
    callgrind_control("-d", pid)
    return dumped(out, pid, before)


def needs_valgrind() -> None:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise run.Skipped(f"{tool} is not installed (Debian: apt-get install valgrind)")


# ---------------------------------------------------------------- K1: instructions per go


class Client:
    """One blocking client that sends a command and reads its reply up to the NUL."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ask(self, command: bytes = b"go") -> bytes:
        self.sock.sendall(command + b"\0")
        reply = b""
        while not reply.endswith(b"\0"):
            block = self.sock.recv(4096)
            if not block:
                raise run.BenchError(f"the server closed the connection after {reply!r}")
            reply += block
        return reply[:-1]

    def round_trips(self, count: int) -> None:
        for _ in range(count):
            reply = self.ask()
            if reply != b"Button released":
                raise run.BenchError(f"go got {reply!r}")

    def close(self) -> None:
        self.sock.close()


def k1(cfg: Config) -> dict:
    """
    Each server under callgrind, instrumentation off until it listens (start-up is not counted,
    and runs faster); then on, a warm-up, the counters zeroed, the round trips, a dump. Then the
    counters zeroed again for one idle second: what the server does on its own meanwhile.
    """
    needs_valgrind()
    out: dict = {}
    for name in cfg.k1_servers:
        for version in versions() if name.startswith("rpisensor") else ["now"]:
            key = label(name, version)
            files = OUT / f"k1-{re.sub(r'[^a-z0-9]+', '-', key)}"
            server = start(key, callgrind(server_argv(name), files, at_start=False), version)
            try:
                subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True,
                               check=True, timeout=120)  # fmt: skip
                client = Client(server.port)
                client.round_trips(cfg.warmup)
                callgrind_control("-z", server.pid)
                t0 = time.monotonic()
                client.round_trips(cfg.roundtrips)
                window = time.monotonic() - t0
                total = dump(files, server.pid)
                callgrind_control("-z", server.pid)
                time.sleep(1.0)
                idle = dump(files, server.pid)
                client.close()
            finally:
                run.stop_server(server, grace=60)
            out[key] = {"per_rt": total / cfg.roundtrips, "total": total, "window_s": window,
                        "idle_per_s": idle, "idle_share": idle * window / total}  # fmt: skip
            print(f"  K1 {key}: {total / cfg.roundtrips:,.0f} instructions per round trip", file=sys.stderr)
    return out


# ---------------------------------------------------------------- K2: start-up instructions


def k2(cfg: Config) -> dict:
    """Instructions from exec until the process listens and its log has been quiet for a second."""
    needs_valgrind()
    out: dict = {}
    cases = [(label("serve", v), v, [run.TWISTD, "-n", "--pidfile=", "rpisensor", "serve", "--gpio", "sim",
                                       "--listen", "tcp:0:interface=127.0.0.1"]) for v in versions()]  # fmt: skip
    if cfg.k2:
        cases += [(name, "now", server_argv(name)) for name in ("tw-inline", NO_TLS)]
    for key, version, argv in cases:
        files = OUT / f"k2-{re.sub(r'[^a-z0-9]+', '-', key)}"
        with tempfile.TemporaryDirectory(prefix="rpisensor-cost-") as directory:
            server = start(f"k2 {key}", callgrind(argv, files, at_start=True), version, cwd=Path(directory))
            try:
                wait_quiet(server)
                out[key] = dump(files, server.pid)
            finally:
                run.stop_server(server, grace=60)
        print(f"  K2 {key}: {out[key]:,} instructions", file=sys.stderr)
    if cfg.k2:
        files = OUT / "k2-twistd-help"
        for path in OUT.glob(f"{files.name}.*"):
            path.unlink()
        subprocess.run(callgrind([run.TWISTD, "--help"], files, at_start=True), env=code_env("now"),
                       capture_output=True, cwd=OUT, timeout=300, preexec_fn=run.pinned(run.SERVER_CPU))  # fmt: skip
        out["twistd --help"] = int(SUMMARY.search(next(OUT.glob(f"{files.name}.*")).read_text()).group(1))
    return out


# ---------------------------------------------------------------- K3: memory


def memory(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        status = dict(re.findall(r"^(\w+):\s+(\d+)", f.read(), re.MULTILINE))
    with open(f"/proc/{pid}/smaps_rollup") as f:
        pss = int(re.search(r"^Pss:\s+(\d+)", f.read(), re.MULTILINE).group(1))
    return {"rss": int(status["VmRSS"]), "anon": int(status["RssAnon"]), "file": int(status["RssFile"]),
            "pss": pss}  # fmt: skip


def role_argv(role: str, collector_port: int) -> list[str]:
    wrapper = [run.PYTHON, str(HERE / "peers" / "rpisensor_modules.py"), "-n", "--pidfile=", "rpisensor"]
    if role == "serve":
        return [*wrapper, "serve", "--gpio", "sim", "--listen", "tcp:0:interface=127.0.0.1"]
    if role == "collect":
        return [*wrapper, "collect", "--listen", "tcp:0:interface=127.0.0.1", "--store", "readings.sqlite"]
    return [*wrapper, "report", "--gpio", "sim", "--protocol", "2", "--outbox", "outbox.sqlite",
            "--connect", f"tcp:host=127.0.0.1:port={collector_port}"]  # fmt: skip


def k3(cfg: Config) -> dict:
    """
    Each role started as a user would (sim pins, its default journal or outbox in a fresh directory;
    report streaming to a collect), read once it has settled. Then, in a fresh interpreter, the
    modules serve had loaded, imported in steps (bench/peers/import_rss.py).
    """
    out: dict = {}
    for version in versions():
        with tempfile.TemporaryDirectory(prefix="rpisensor-cost-") as directory:
            cwd = Path(directory)
            modules = {role: cwd / f"{role}-modules.txt" for role in ("serve", "collect", "report")}
            collect = start(label("k3 collect", version), role_argv("collect", 0), version, cwd=cwd,
                            extra_env={"BENCH_MODULES_FILE": str(modules["collect"])})  # fmt: skip
            serve = start(label("k3 serve", version), role_argv("serve", 0), version, cwd=cwd,
                          extra_env={"BENCH_MODULES_FILE": str(modules["serve"])})  # fmt: skip
            report = start(label("k3 report", version), role_argv("report", collect.port), version, cwd=cwd,
                           extra_env={"BENCH_MODULES_FILE": str(modules["report"])})  # fmt: skip
            try:
                for server in (collect, serve, report):
                    wait_quiet(server)
                time.sleep(cfg.settle)
                for role, server in (("serve", serve), ("report", report), ("collect", collect)):
                    entry = memory(server.pid)
                    os.kill(server.pid, signal.SIGUSR2)
                    deadline = time.monotonic() + 10
                    while "BENCH-MODULES" not in run.log_text(server):
                        if time.monotonic() > deadline:
                            raise run.BenchError(f"{server.name} did not list its modules (log {server.log})")
                        time.sleep(0.02)
                    names = modules[role].read_text().split()
                    entry["modules"] = len(names)
                    entry["loaded"] = {m: m in names for m in ("prometheus_client", "OpenSSL", "cryptography",
                                                                 "sqlite3", "twisted.trial.unittest",
                                                                 "twisted.web")}  # fmt: skip
                    if role == "serve":
                        steps = subprocess.run([run.PYTHON, str(HERE / "peers" / "import_rss.py"),
                                                str(modules[role]), "prometheus_client"], env=code_env(version),
                                               capture_output=True, text=True, cwd=cwd, timeout=120)  # fmt: skip
                        if steps.returncode != 0:
                            raise run.BenchError(f"import_rss.py failed: {steps.stderr}")
                        entry["steps"] = json.loads(steps.stdout)
                    out[label(role, version)] = entry
            finally:
                for server in (report, serve, collect):
                    run.stop_server(server)
    for name in ("tw-inline", NO_TLS):
        inline = start(f"k3 {name}", server_argv(name))
        try:
            time.sleep(cfg.settle)
            out[name] = memory(inline.pid)
        finally:
            run.stop_server(inline)
    return out


# ---------------------------------------------------------------- K4: where the CPU goes


def task_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process, all its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def k4(cfg: Config) -> dict:
    """
    At 100 closed-loop connections (S1's load generator): the server's user and system CPU over
    the run per round trip; then a second run with strace -c -f attached: system calls per round
    trip (strace slows the server; the counts per round trip are what matters).
    """
    out: dict = {}
    strace = shutil.which("strace")
    for name in ("rpisensor", "threaded"):
        server = start(f"k4 {name}", server_argv(name))
        try:
            load = ["closed", "--port", str(server.port), "--clients", "100", "--duration", str(cfg.k4_duration),
                    "--warmup", "0.3"]  # fmt: skip
            user0, sys0 = task_cpu(server.pid)
            report = run.loadgen(load)
            user1, sys1 = task_cpu(server.pid)
            requests = report["rps"] * (report["wall_s"] + 0.3)  # the CPU covers the warm-up too
            entry = {"rps": report["rps"], "user_us": (user1 - user0) / requests * 1e6,
                     "sys_us": (sys1 - sys0) / requests * 1e6}  # fmt: skip
            if strace is not None:
                counts = OUT / f"k4-{name}-strace.txt"
                tracer = subprocess.Popen([strace, "-c", "-f", "-o", str(counts), "-p", str(server.pid)],
                                          stderr=subprocess.DEVNULL)  # fmt: skip
                time.sleep(0.5)
                traced = run.loadgen(load)
                tracer.send_signal(signal.SIGINT)
                tracer.wait(30)
                calls = {m[1]: int(m[0]) for m in re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$",
                                                             counts.read_text(), re.MULTILINE)}  # fmt: skip
                calls.pop("total", None)
                # strace counted over the warm-up too, at the same rate (and the connections' set-up)
                trips = traced["rps"] * (traced["wall_s"] + 0.3)
                entry["syscalls"] = {k: v / trips for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                                     if v / trips >= 0.01}  # fmt: skip
        finally:
            run.stop_server(server)
        out[name] = entry
    if strace is None:
        out["note"] = "strace is not installed: no system call counts"
    return out


# ---------------------------------------------------------------- P1-P3: the emulated Pi


#: Four inputs (BOARD 24, 26, 22, 18 = BCM 8, 7, 25, 24), pulled up, released (high).
FOUR_INPUTS = ["--input", "button=24", "--input", "b2=26", "--input", "b3=22", "--input", "b4=18"]
FOUR_HIGH = {8, 7, 25, 24}


def emulated_pi(directory: Path):
    from tests import emulated_pi

    reason = emulated_pi.unavailable_reason()
    if reason:
        raise run.Skipped(f"the emulated Pi cannot run: {reason}")
    pi = emulated_pi.EmulatedPi(directory)
    reason = pi.probe()
    if reason:
        raise run.Skipped(reason)
    return pi


def serve_on_pi(pi, directory: Path, name: str, version: str, options: list[str]) -> run.Server:
    argv = [run.TWISTD, "-n", "--pidfile=", "rpisensor", "serve", "--gpio", "rpi",
            "--listen", "tcp:0:interface=127.0.0.1", "--journal", str(directory / f"{version}.sqlite"),
            *options]  # fmt: skip
    return start(name, pi.command(argv), version, cwd=directory)


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in nanoseconds' precision (schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def p1(cfg: Config) -> dict:
    """serve with four inputs at --poll-interval 0.01, nothing changing: its CPU, all threads."""
    out: dict = {}
    for version in versions():
        directory = Path(tempfile.mkdtemp(prefix="rpisensor-cost-pi-"))
        try:
            pi = emulated_pi(directory)
            pi.set_levels(high=FOUR_HIGH)
            server = serve_on_pi(pi, directory, label("p1 serve", version), version,
                                 ["--poll-interval", "0.01", *FOUR_INPUTS])  # fmt: skip
            try:
                wait_quiet(server)
                with run.ForeignCPU() as foreign:
                    cpu0, t0 = thread_cpu_seconds(server.pid), time.monotonic()
                    time.sleep(cfg.idle_seconds)
                    cpu1, t1 = thread_cpu_seconds(server.pid), time.monotonic()
            finally:
                run.stop_server(server)
            out[label("serve", version)] = {"cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "foreign": foreign.pct}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return out


def p2(cfg: Config) -> dict:
    """
    serve --poll-interval 0.001 and a v2 subscriber; the button pressed for 2 ms (GPLEV0 written,
    a busy wait of 2 ms, written back), then released until both readings arrived or 1 s passed,
    then a random 5-15 ms. A pulse counts as seen when the press and the release both arrive.
    """
    from tests.v2_subscriber import RawSubscriber

    out: dict = {}
    for version in versions():
        directory = Path(tempfile.mkdtemp(prefix="rpisensor-cost-pi-"))
        try:
            pi = emulated_pi(directory)
            pi.set_levels(high={8})
            try:
                server = serve_on_pi(pi, directory, label("p2 serve", version), version,
                                     ["--poll-interval", "0.001"])  # fmt: skip
            except run.BenchError as e:
                out[label("serve", version)] = {"refused": str(e).splitlines()[-1]}
                continue
            rng = random.Random(19)
            seen, lengths = 0, []
            subscriber = RawSubscriber(server.port, 0)
            foreign = run.ForeignCPU().__enter__()
            try:
                if subscriber.next_entry()["value"] != 0:
                    raise run.BenchError("P2: the first reading should be the released button")
                subscriber.sock.settimeout(1.0)
                for _ in range(cfg.pulses):
                    time.sleep(rng.uniform(0.005, 0.015))
                    began = time.perf_counter()
                    pi.set_levels(high=set())
                    while time.perf_counter() - began < 0.002:
                        pass
                    pi.set_levels(high={8})
                    lengths.append((time.perf_counter() - began) * 1000)
                    try:
                        values = [subscriber.next_entry()["value"], subscriber.next_entry()["value"]]
                    except TimeoutError:
                        continue  # missed: no reading within a second
                    if values != [1, 0]:
                        raise run.BenchError(f"P2: a pulse gave the readings {values}, not [1, 0]")
                    seen += 1
            finally:
                foreign.__exit__(None, None, None)
                subscriber.close()
                run.stop_server(server)
            out[label("serve", version)] = {"seen": seen, "pulses": cfg.pulses, "foreign": foreign.pct,
                                            "length_ms": [min(lengths), statistics.median(lengths), max(lengths)]}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return out


def p3(cfg: Config) -> dict:
    """
    serve --gpio rpi (default options): N go with a ping after every tenth, in one write;
    the time from the write to the last reply's NUL, the replies checked one by one.
    """
    out: dict = {}
    burst = b"".join(b"go\0" * 10 + b"ping\0" for _ in range(cfg.pipelined // 10))
    expected = [b"Button released"] * 10 + [b"pong"]
    for version in versions():
        directory = Path(tempfile.mkdtemp(prefix="rpisensor-cost-pi-"))
        try:
            pi = emulated_pi(directory)
            pi.set_levels(high={8})
            server = serve_on_pi(pi, directory, label("p3 serve", version), version, [])
            times = []
            try:
                wait_quiet(server)
                for _ in range(cfg.bursts):
                    client = Client(server.port)
                    want = cfg.pipelined // 10 * 11
                    began = time.monotonic()
                    client.sock.sendall(burst)
                    data, count = bytearray(), 0
                    while count < want:
                        block = client.sock.recv(1 << 16)
                        if not block:
                            raise run.BenchError(f"P3: closed after {count} replies")
                        count += block.count(b"\0")
                        data += block
                    times.append(time.monotonic() - began)
                    client.close()
                    replies = bytes(data).split(b"\0")[:-1]
                    if replies != expected * (cfg.pipelined // 10):
                        raise run.BenchError("P3: the replies are not the go and ping replies in order")
            finally:
                run.stop_server(server)
            out[label("serve", version)] = {"seconds": statistics.median(times), "all": times}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return out


SCENARIOS = {"K1": k1, "K2": k2, "K3": k3, "K4": k4, "P1": p1, "P2": p2, "P3": p3}


# ---------------------------------------------------------------- the table


def num(value: float) -> str:
    return f"{value:,.0f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def build_rows(out: dict, cfg: Config, judge: bool) -> list[list[str]]:
    rows = []

    def verdict(ok: bool) -> str:
        return ("met" if ok else "MISSED") if judge else "n/a (quick)"

    def skipped(name: str) -> bool:
        if isinstance(out.get(name), str):
            rows.append([name, "skipped", out[name], "", ""])
            return True
        return name not in out

    if not skipped("K1"):
        k = out["K1"]
        inline = k.get("tw-inline", {}).get("per_rt")
        for key, entry in k.items():
            ratio = f" ({entry['per_rt'] / inline:.2f}x tw-inline)" if inline else ""
            goal, ok = "", ""
            if key == "rpisensor" and inline:
                goal, ok = "<= 1.0x tw-inline", verdict(entry["per_rt"] <= inline)
            rows.append(["K1 instructions per go", key, num(entry["per_rt"]) + ratio, goal, ok])
    if not skipped("K2"):
        k = out["K2"]
        for key, value in k.items():
            goal, ok, extra = "", "", ""
            if key == f"serve ({BEFORE})":
                now = k.get("serve")
                extra = f"; now {now / value:.2f}x" if now else ""
            if key == "serve" and f"serve ({BEFORE})" in k:
                goal, ok = "<= 2/3 of before", verdict(value <= k[f"serve ({BEFORE})"] * 2 / 3)
            rows.append(["K2 start-up instructions", key, num(value) + extra, goal, ok])
    if not skipped("K3"):
        k = out["K3"]
        for key, entry in k.items():
            goal, ok = "", ""
            if key in ("serve", "report"):
                goal, ok = "RSS <= 35 MB", verdict(entry["rss"] <= 35 * 1000)
            text = f"RSS {mib(entry['rss'])} (anon {mib(entry['anon'])}, file {mib(entry['file'])}), PSS {mib(entry['pss'])}"
            if "modules" in entry:
                loaded = [m for m, yes in entry["loaded"].items() if yes]
                text += f"; {entry['modules']} modules, incl. {', '.join(loaded) or 'none of the large ones'}"
            rows.append(["K3 idle memory", key, text, goal, ok])
            if "steps" in entry:
                steps = entry["steps"]
                parts = [f"{steps[0][0]} {mib(steps[0][1])}"]
                parts += [f"+{b[0]} {mib(b[1] - a[1])}" for a, b in zip(steps, steps[1:])]
                parts.append(f"= {mib(steps[-1][1])}; the running role {mib(entry['rss'])}")
                rows.append(["K3 idle memory", f"{key}: its modules imported in steps", ", ".join(parts), "", ""])
    if not skipped("K4"):
        for key, entry in out["K4"].items():
            if key == "note":
                rows.append(["K4 100 connections", "note", entry, "", ""])
                continue
            rows.append(["K4 100 connections", f"{key}: CPU us per round trip, user + system",
                         f"{entry['user_us']:.1f} + {entry['sys_us']:.1f} ({num(entry['rps'])} round trips/s)",
                         "", ""])  # fmt: skip
            if "syscalls" in entry:
                calls = ", ".join(f"{name} {per:.2f}" for name, per in entry["syscalls"].items())
                rows.append(["K4 100 connections", f"{key}: system calls per round trip", calls, "", ""])
    if not skipped("P1"):
        for key, entry in out["P1"].items():
            goal, ok = ("<= 1% of a core", verdict(entry["cpu_pct"] <= 1.0)) if key == "serve" else ("", "")
            rows.append(["P1 4 inputs polled at 100 Hz", f"{key}: CPU, % of a core", f"{entry['cpu_pct']:.2f}",
                         goal, ok])  # fmt: skip
    if not skipped("P2"):
        for key, entry in out["P2"].items():
            if "refused" in entry:
                rows.append(["P2 2 ms pulses, poll 1 ms", key, f"cannot run: {entry['refused']}", "", ""])
                continue
            lo, mid, hi = entry["length_ms"]
            goal, ok = ("all seen", verdict(entry["seen"] == entry["pulses"])) if key == "serve" else ("", "")
            rows.append(["P2 2 ms pulses, poll 1 ms", f"{key}: pulses seen (press and release)",
                         f"{entry['seen']} of {entry['pulses']} (pulses {lo:.2f} / {mid:.2f} / {hi:.2f} ms)",
                         goal, ok])  # fmt: skip
    if not skipped("P3"):
        for key, entry in out["P3"].items():
            goal, ok = ("<= 0.1 s", verdict(entry["seconds"] <= 0.1)) if key == "serve" else ("", "")
            each = " ".join(f"{s:.3f}" for s in entry["all"])
            rows.append(["P3 pipelined go, rpi", f"{key}: {cfg.pipelined:,} go (+ pings), s to the last reply",
                         f"{entry['seconds']:.3f} ({each})", goal, ok])  # fmt: skip
    return rows


HEADER = ["scenario", "what", "figure", "goal", "goal met?"]


def notes(out: dict, cfg: Config) -> str:
    lines = []
    if run.SERVER_CPU is not None:
        lines.append(f"Servers on CPU {run.SERVER_CPU}; clients, load generator and flippers on CPU {run.LOADGEN_CPU}.")
    k = out.get("K1")
    if isinstance(k, dict) and k:
        share = max(e["idle_share"] for e in k.values())
        lines.append(f"K1: {cfg.roundtrips:,} round trips after {cfg.warmup} of warm-up, one client; what the "
                     f"servers did on their own while idle is at most {share:.2%} of a window's count.")  # fmt: skip
    for name in ("P1", "P2"):
        entries = out.get(name)
        if isinstance(entries, dict):
            foreign = ", ".join(f"{key} {e['foreign']:.0f}%" for key, e in entries.items() if "foreign" in e)
            lines.append(f"{name}: CPU used by other processes meanwhile (% of one CPU): {foreign}.")
    if COMPARE is not None:
        lines.append(f"'{BEFORE}': rpisensor from {COMPARE}, in the same run.")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> int:
    global COMPARE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--only", help="comma-separated scenarios to run, e.g. K1,P3")
    parser.add_argument("--compare", type=Path, help="a directory holding another checkout's rpisensor package")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    only = run.chosen_scenarios(parser, args.only, SCENARIOS)
    if args.compare is not None:
        COMPARE = args.compare.resolve()
        if not (COMPARE / "rpisensor" / "__init__.py").exists():
            parser.error(f"--compare {args.compare}: no rpisensor package there")

    started = time.monotonic()
    run.SERVER_CPU, run.LOADGEN_CPU = run.plan_cpus()
    if run.LOADGEN_CPU is not None:
        os.sched_setaffinity(0, {run.LOADGEN_CPU})
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    run.LOGS = OUT
    try:
        run.build_c_programs()
        compile_bytecode()
        out = run.run_each(only, lambda name: SCENARIOS[name](cfg))
    except run.BENCH_FAILURES as e:
        return run.bench_failed(e)
    finally:
        run.stop_all()
    RESULTS.write_text(json.dumps({"compare": str(COMPARE) if COMPARE else None, "results": out}, indent=1))
    print(run.render(build_rows(out, cfg, judge=not args.quick), HEADER))
    print(notes(out, cfg))
    print(f"Total bench time {time.monotonic() - started:.0f} s; raw results {RESULTS}.")
    return 0


if __name__ == "__main__":
    run.ensure_interpreter()
    sys.exit(main())
