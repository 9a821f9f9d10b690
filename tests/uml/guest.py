"""
Boots the cached User-Mode Linux kernel (built by build-kernel.sh) with init.sh as PID 1,
runs guest test files inside it with pytest in one guest Python process, and returns what
happened: the guest's exit statuses, its output and each guest test's outcome.

The guest's root is the host's C{/} over hostfs, read-only; only the results directory is
writable from inside. The guest runs this checkout with the host's venv interpreter, so
rpisensor is importable there as it is here.

From the host, to run guest tests and see their output::

    .venv/bin/python -m tests.uml.guest [-v] [-k EXPRESSION] [PATH...]   (default: every guest test file)
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
BUILD_SCRIPT = HERE / "build-kernel.sh"
INIT = HERE / "init.sh"
GUEST_RUN = HERE / "guest_run.py"
GUEST_TESTS = HERE / "guest_tests"

#: The header chip's label and size: a Pi 4's (BCM2711, 58 lines). A Pi 5 has C{pinctrl-rp1}
#: (54 lines), Pi 1-3 C{pinctrl-bcm2835} (54 lines).
HEADER_LABEL = "pinctrl-bcm2711"
HEADER_LINES = 58
#: Another chip, made first so the header is not gpiochip0: a Pi's firmware GPIO expander.
OTHER_LABEL = "raspberrypi-exp-gpio"

#: A hung guest is ended after this long; a whole run takes well under a minute.
DEFAULT_TIMEOUT = 300.0
HOW_TO_BUILD = "run tests/uml/build-kernel.sh (about 4 minutes on 2 cores; as root it installs what it needs)"

_BAD_OUTCOMES = ("failed", "error", "xpassed")


class Unavailable(Exception):
    """The guest cannot be booted here; the message says why and what to do."""


def guest_test_files() -> list[Path]:
    """The guest test files: C{tests/uml/guest_tests/test_*.py}."""
    return sorted(GUEST_TESTS.glob("test_*.py"))


def cached_kernel() -> Path:
    """
    The cached kernel for the current cache key (build-kernel.sh owns the key).

    @raise Unavailable: it is not built, or cannot be on this host.
    """
    if sys.platform != "linux":
        raise Unavailable(f"User-Mode Linux runs on Linux only (this is {sys.platform})")
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-kernel"], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        why = done.stderr.strip().removeprefix("build-kernel: ") or f"build-kernel.sh exited {done.returncode}"
        raise Unavailable(f"{why}; {HOW_TO_BUILD}")
    return Path(done.stdout.strip().splitlines()[-1])


def check_python(python: str) -> None:
    """
    @raise Unavailable: C{python}, which the guest will run, lacks the gpiod wheel (v2.2+).
    """
    check = "import sys, gpiod; sys.exit(tuple(int(p) for p in gpiod.__version__.split('.')[:2]) < (2, 2))"
    if subprocess.run([python, "-c", check], capture_output=True, timeout=60).returncode != 0:
        raise Unavailable(f"{python} cannot import gpiod>=2.2, which the guest tests use; {HOW_TO_BUILD}")


def check_paths() -> None:
    """
    @raise Unavailable: the checkout's path has whitespace, which the kernel command line
        (where init.sh's path goes) cannot carry.
    """
    if any(c.isspace() for c in str(INIT)):
        raise Unavailable(f"the checkout's path has whitespace, which a kernel command line cannot carry: {CHECKOUT}")


def unavailable_reason(python: str = sys.executable) -> Optional[str]:
    """Why the guest cannot run here, or C{None} when it can."""
    try:
        check_paths()
        cached_kernel()
        check_python(python)
    except Unavailable as e:
        return str(e)
    return None


@dataclass(frozen=True)
class GuestTest:
    """One test's outcome inside the guest: passed, failed, error, skipped, xfailed or xpassed."""

    nodeid: str
    path: Path
    outcome: str
    longrepr: str
    duration: float

    @property
    def bad(self) -> bool:
        return self.outcome in _BAD_OUTCOMES


def collect_results(lines: Iterable[str], rootdir: Path = CHECKOUT) -> dict[str, GuestTest]:
    """
    Fold guest_run.py's JSON lines (one per test phase, or per failed collection) into one
    outcome per test: a failed collection, setup or teardown is an error, a skip in setup is
    a skip, otherwise the call decides; a test that never reported its call is an error (the
    guest stopped in it). Tests are keyed by their file (relative to C{rootdir} when inside
    it) and their name in it.
    """
    phases: dict[tuple[Path, str], dict[str, dict]] = {}
    for line in lines:
        if line.strip():
            record = json.loads(line)
            file_part, _, name = record["nodeid"].partition("::")
            path = Path(record.get("path") or rootdir / file_part).resolve()
            phases.setdefault((path, name), {})[record["when"]] = record
    folded = (_fold(path, name, by_phase, rootdir) for (path, name), by_phase in phases.items())
    return {test.nodeid: test for test in folded}


def _fold(path: Path, name: str, by_phase: dict[str, dict], rootdir: Path) -> GuestTest:
    setup, call, teardown = (by_phase.get(when) for when in ("setup", "call", "teardown"))
    texts = [record.get("longrepr", "") for record in by_phase.values()]
    if "collect" in by_phase or (setup and setup["outcome"] == "failed"):
        outcome = "error"
    elif setup and setup["outcome"] == "skipped":
        outcome = "skipped"
    elif call is None:
        outcome = "error"
        texts.append("the guest stopped while this test was running")
    else:
        outcome = call["outcome"]
    if teardown and teardown["outcome"] == "failed" and outcome not in _BAD_OUTCOMES:
        outcome = "error"
    shown = path.relative_to(rootdir.resolve()) if path.is_relative_to(rootdir.resolve()) else path
    return GuestTest(
        nodeid=f"{shown}::{name}" if name else str(shown),
        path=path,
        outcome=outcome,
        longrepr="\n".join(text for text in texts if text),
        duration=sum(record.get("duration", 0.0) for record in by_phase.values()),
    )


@dataclass
class GuestRun:
    """What one boot did."""

    #: UML's exit status; C{None} when it was killed at the deadline.
    uml_status: Optional[int]
    timed_out: bool
    #: The guest pytest's exit status; C{None} when it never finished.
    pytest_status: Optional[int]
    #: UML's console: kernel and init messages.
    console: str
    #: The guest pytest's terminal output.
    output: str
    tests: dict[str, GuestTest] = field(default_factory=dict)
    #: What init.sh could not do, if anything.
    init_error: Optional[str] = None
    #: The guest's uptime (seconds) when init started, when the chips were made, and when
    #: the guest's Python had imported pytest.
    boot_seconds: Optional[float] = None
    chips_ready_seconds: Optional[float] = None
    python_started_seconds: Optional[float] = None
    #: How long the guest's pytest ran, and the whole boot as the host saw it.
    pytest_seconds: Optional[float] = None
    wall_seconds: float = 0.0

    @property
    def finished(self) -> bool:
        """
        The guest powered off by itself after its pytest ran to the end. UML itself
        sometimes aborts (SIGABRT) while halting on a loaded host, after the guest
        wrote its results and synced: that halt is UML's, not the tests', so it counts.
        """
        halted = self.uml_status == 0 or self.uml_status == -signal.SIGABRT
        return halted and not self.timed_out and self.pytest_status is not None

    def tests_in(self, path: Path) -> list[GuestTest]:
        path = Path(path).resolve()
        return [test for test in self.tests.values() if test.path == path]

    def describe(self) -> str:
        """A summary for a failure message: statuses, timings, and the ends of both outputs."""
        lines = [
            f"UML exit status: {'killed at the deadline' if self.timed_out else self.uml_status}",
            f"guest pytest exit status: {self.pytest_status}",
            f"guest uptime at init: {self.boot_seconds} s, chips made: {self.chips_ready_seconds} s, "
            f"pytest imported: {self.python_started_seconds} s; pytest ran {self.pytest_seconds} s; "
            f"the whole boot took {self.wall_seconds:.1f} s",
        ]
        if self.init_error:
            lines.append(f"init failed: {self.init_error}")
        lines += ["--- guest pytest output (end)", _tail(self.output), "--- UML console (end)", _tail(self.console)]
        return "\n".join(lines)


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _number(text: Optional[str], kind=float):
    try:
        return kind(text.strip()) if text is not None else None
    except ValueError:
        return None


def _memory_file_dir() -> str:
    """
    Where UML keeps the guest's memory (a file it unlinks at once): C{/dev/shm} when it is a
    tmpfs that allows executable mappings, which UML needs; else the temporary directory.
    """
    chosen = os.environ.get("RPISENSOR_UML_TMPDIR")
    if chosen:
        return chosen
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                _, where, kind, options = line.split()[:4]
                if where == "/dev/shm" and kind == "tmpfs" and "noexec" not in options.split(","):
                    if os.access("/dev/shm", os.W_OK):
                        return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


def _stop_group(process: subprocess.Popen) -> None:
    """End UML and the host processes it forked (they share its process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_guest(
    pytest_args: Sequence[str],
    results_dir: Path,
    kernel: Optional[Path] = None,
    python: str = sys.executable,
    timeout: float = DEFAULT_TIMEOUT,
    header_label: str = HEADER_LABEL,
    header_lines: int = HEADER_LINES,
    memory: str = "512M",
) -> GuestRun:
    """
    Boot the guest once and run C{pytest pytest_args} inside it (from the checkout, with its
    pyproject settings).

    @param results_dir: an empty host directory, the only one the guest can write; its path
        becomes a kernel parameter, so it must have no whitespace.
    @param kernel: the UML kernel; by default the cached one (L{Unavailable} if none).
    @param timeout: the guest is killed after this many seconds.
    """
    results_dir = Path(results_dir).resolve()
    if any(c.isspace() for c in str(results_dir)):
        raise ValueError(f"the results directory must have no whitespace in its path: {results_dir!r}")
    check_paths()
    if kernel is None:
        kernel = cached_kernel()
    job_env = {
        "RPISENSOR_UML_CHECKOUT": str(CHECKOUT),
        "RPISENSOR_UML_PYTHON": python,
        "RPISENSOR_UML_HEADER_LABEL": header_label,
        "RPISENSOR_UML_HEADER_LINES": str(header_lines),
        "RPISENSOR_UML_OTHER_LABEL": OTHER_LABEL,
    }
    (results_dir / "job.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in job_env.items()))
    args = ["-q", "-p", "no:cacheprovider", "--rootdir", str(CHECKOUT), "-c", str(CHECKOUT / "pyproject.toml")]
    (results_dir / "job.json").write_text(json.dumps({"pytest_args": args + list(pytest_args)}))
    command = [
        str(kernel), f"mem={memory}", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro",
        f"init={INIT}", "con=null", "ssl=null", "con0=fd:0,fd:1", "loglevel=4",
        f"RPISENSOR_UML_RESULTS={results_dir}",
    ]
    env = dict(os.environ, TMPDIR=_memory_file_dir())
    started = time.monotonic()
    with open(results_dir / "console.txt", "wb") as console:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        try:
            status: Optional[int] = process.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop_group(process)
            status, timed_out = None, True
    results = _read(results_dir / "results.jsonl") or ""
    return GuestRun(
        uml_status=status,
        timed_out=timed_out,
        pytest_status=_number(_read(results_dir / "exit-status"), int),
        console=_read(results_dir / "console.txt") or "",
        output=_read(results_dir / "pytest-output.txt") or "",
        tests=collect_results(results.splitlines()),
        init_error=(_read(results_dir / "init-error") or "").strip() or None,
        boot_seconds=_number(_read(results_dir / "init-uptime")),
        chips_ready_seconds=_number(_read(results_dir / "chips-uptime")),
        python_started_seconds=_number(_read(results_dir / "python-uptime")),
        pytest_seconds=_number(_read(results_dir / "pytest-seconds")),
        wall_seconds=time.monotonic() - started,
    )


def main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.uml.guest", description="Run guest tests inside the UML kernel and show their output."
    )
    parser.add_argument("paths", nargs="*", help="guest test files or directories (default: all of them)")
    parser.add_argument("-k", metavar="EXPRESSION", help="only the guest tests pytest's -k selects")
    parser.add_argument("-v", "--verbose", action="store_true", help="the guest's pytest lists each test")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="kill the guest after this many seconds")
    options = parser.parse_args(argv)
    pytest_args = [str(Path(path).resolve()) for path in options.paths] or [str(GUEST_TESTS)]
    pytest_args += (["-k", options.k] if options.k else []) + (["-v"] if options.verbose else [])
    try:
        check_python(sys.executable)
        kernel = cached_kernel()
    except Unavailable as e:
        print(f"cannot run the guest: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rpisensor-uml-") as results:
        run = run_guest(pytest_args, Path(results), kernel, timeout=options.timeout)
    print(run.output, end="")
    if not run.finished:
        print(run.describe())
    print(
        f"uml: init at {run.boot_seconds} s, chips made at {run.chips_ready_seconds} s, pytest imported at "
        f"{run.python_started_seconds} s, pytest ran {run.pytest_seconds} s; {run.wall_seconds:.1f} s in all"
    )
    return run.pytest_status if run.pytest_status is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
