"""
The real kernel GPIO stack, inside a User-Mode Linux kernel: gpio-sim, the GPIO character
device, the gpiod wheel, Twisted (see tests/uml/README.md).

One boot for the module runs every guest test file (tests/uml/guest_tests/test_*.py) in one
guest pytest; each file is one test here, which fails with the guest's failures and skips
when all of that file's guest tests skipped. The module skips, with the reason, where the
kernel is not built or cannot run; with RPISENSOR_UML_REQUIRED=1 (CI, once it has built the
kernel) that is a failure instead.

pytest only: trial finds no TestCase here.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.uml import guest

GUEST_FILES = guest.guest_test_files()

CANARY = '''
import os
import pytest

def test_passes():
    assert os.path.exists(os.environ["RPISENSOR_UML_CHIP"])

def test_fails():
    assert 1 + 1 == 3, "the canary fails on purpose"

def test_skips():
    pytest.skip("the canary skips on purpose")
'''


def _unavailable(reason: str):
    if os.environ.get("RPISENSOR_UML_REQUIRED") == "1":
        pytest.fail(f"RPISENSOR_UML_REQUIRED=1, but the UML tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """The one host directory the guest may write."""
    return tmp_path_factory.mktemp("uml")


@pytest.fixture(scope="module")
def canary(results_dir):
    """A guest test file that passes, fails and skips, to prove each comes through as it is.

    It lies in the results directory: the guest's /tmp is its own, and hides the host's.
    """
    path = results_dir / "canary" / "test_canary.py"
    path.parent.mkdir()
    path.write_text(CANARY)
    return path


@pytest.fixture(scope="module")
def uml(results_dir, canary):
    """One boot: every guest test file, and the canary."""
    reason = guest.unavailable_reason(sys.executable)
    if reason:
        _unavailable(reason)
    run = guest.run_guest([str(path) for path in GUEST_FILES] + [str(canary)], results_dir)
    print(
        f"uml: init at {run.boot_seconds} s, chips at {run.chips_ready_seconds} s, pytest imported at "
        f"{run.python_started_seconds} s, guest pytest {run.pytest_seconds} s, {run.wall_seconds:.1f} s in all"
    )
    return run


def test_the_guest_boots_runs_its_tests_and_powers_off(uml):
    assert uml.finished, uml.describe()
    assert uml.pytest_status == 1, f"the canary's failure should make the guest's pytest exit 1\n{uml.describe()}"
    assert uml.boot_seconds is not None and uml.python_started_seconds is not None, uml.describe()


def test_a_failing_guest_test_is_reported_with_its_message(uml, canary):
    outcomes = {test.nodeid.rsplit("::", 1)[1]: test for test in uml.tests_in(canary)}
    assert {name: test.outcome for name, test in outcomes.items()} == {
        "test_passes": "passed", "test_fails": "failed", "test_skips": "skipped"}, uml.describe()
    assert "the canary fails on purpose" in outcomes["test_fails"].longrepr
    assert "the canary skips on purpose" in outcomes["test_skips"].longrepr


@pytest.mark.parametrize("path", GUEST_FILES, ids=[path.name for path in GUEST_FILES])
def test_guest_file(uml, path):
    """Every guest test in this file passed inside the guest."""
    tests = uml.tests_in(path)
    assert tests, f"the guest ran no test from {path.name}\n{uml.describe()}"
    bad = [test for test in tests if test.bad]
    assert not bad, "\n\n".join(f"{test.nodeid}: {test.outcome} in the guest\n{test.longrepr}" for test in bad)
    if all(test.outcome == "skipped" for test in tests):
        pytest.skip("; ".join(f"{test.nodeid}: {test.longrepr}" for test in tests))
    for test in tests:
        print(f"{test.outcome:8} {test.duration:6.3f} s  {test.nodeid}")


# The harness itself, without a kernel.


def test_phases_fold_into_one_outcome_per_test(tmp_path):
    def line(nodeid, when, outcome, longrepr=""):
        return json.dumps({"nodeid": nodeid, "when": when, "outcome": outcome, "longrepr": longrepr, "duration": 0.5})

    lines = [
        line("t.py::ok", "setup", "passed"), line("t.py::ok", "call", "passed"), line("t.py::ok", "teardown", "passed"),
        line("t.py::bad_setup", "setup", "failed", "fixture broke"),
        line("t.py::bad_teardown", "setup", "passed"), line("t.py::bad_teardown", "call", "passed"),
        line("t.py::bad_teardown", "teardown", "failed", "cleanup broke"),
        line("t.py::skipped", "setup", "skipped", "no device"),
        line("t.py::hung", "setup", "passed"),
        line("broken.py", "collect", "failed", "SyntaxError"),
        # A file outside the rootdir has no path in its node id: the record's path says it.
        json.dumps({"nodeid": "::elsewhere", "path": "/elsewhere/test_x.py", "when": "call", "outcome": "passed"}),
    ]
    tests = guest.collect_results(lines, tmp_path)
    assert {nodeid: test.outcome for nodeid, test in tests.items()} == {
        "t.py::ok": "passed", "t.py::bad_setup": "error", "t.py::bad_teardown": "error",
        "t.py::skipped": "skipped", "t.py::hung": "error", "broken.py": "error",
        "/elsewhere/test_x.py::elsewhere": "passed"}
    assert "cleanup broke" in tests["t.py::bad_teardown"].longrepr
    assert "stopped while this test was running" in tests["t.py::hung"].longrepr
    assert tests["t.py::ok"].duration == 1.5
    assert tests["broken.py"].path == tmp_path / "broken.py"


def test_a_hung_guest_is_killed_at_the_deadline_with_what_it_started(tmp_path):
    """A stand-in for the kernel that never exits, and forks: both are gone after the deadline."""
    pids = tmp_path / "pids"
    kernel = tmp_path / "hung-kernel"
    kernel.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        sleep 600 &
        echo $$ $! > {pids}
        wait
    """))
    kernel.chmod(0o755)
    results = tmp_path / "results"
    results.mkdir()
    started = time.monotonic()
    run = guest.run_guest(["unused"], results, kernel=kernel, timeout=1.0)
    assert run.timed_out and run.uml_status is None and not run.finished
    assert "killed at the deadline" in run.describe()
    assert time.monotonic() - started < 30
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, f"process {pid} outlived the deadline"
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_without_a_cached_kernel_the_reason_says_how_to_build_it(tmp_path, monkeypatch):
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("the build script only builds on x86_64 Linux")
    monkeypatch.setenv("RPISENSOR_UML_CACHE", str(tmp_path / "empty-cache"))
    reason = guest.unavailable_reason(sys.executable)
    assert reason is not None and "not built" in reason and "build-kernel.sh" in reason


def test_the_build_script_finds_the_kernel_it_caches():
    """--print-kernel names the cached kernel for the current key, and builds nothing."""
    try:
        kernel = guest.cached_kernel()
    except guest.Unavailable as e:
        _unavailable(str(e))
    assert kernel.is_file() and os.access(kernel, os.X_OK)
    key = (kernel.parent / "key.txt").read_text()
    for part in ("kernel.config", "hz-1000.patch", "xstate-restore.patch"):
        assert (guest.HERE / part).read_text() in key
    config = (kernel.parent / "config").read_text().splitlines()
    for option in ("CONFIG_GPIO_SIM=y", "CONFIG_GPIO_CDEV=y", "CONFIG_PCI_MSI=y", "CONFIG_HZ=1000"):
        assert option in config


def test_a_changed_config_is_a_different_cache_entry(tmp_path):
    """The key covers kernel.config: a copy of the scripts with one more option misses the cache."""
    if guest.unavailable_reason(sys.executable):
        pytest.skip("needs the cached kernel")
    copy = _copy_build_scripts(tmp_path)
    found = subprocess.run(["bash", str(copy / "build-kernel.sh"), "--print-kernel"], capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.strip() == str(guest.cached_kernel())
    with open(copy / "kernel.config", "a") as config:
        config.write("CONFIG_GPIO_AGGREGATOR=y\n")
    missed = subprocess.run(["bash", str(copy / "build-kernel.sh"), "--print-kernel"], capture_output=True, text=True)
    assert missed.returncode == 2 and "not built for the current key" in missed.stderr


def test_a_changed_patch_is_a_different_cache_entry(tmp_path):
    """The key covers the AMX fix too: a cached kernel built without it is never reused."""
    if guest.unavailable_reason(sys.executable):
        pytest.skip("needs the cached kernel")
    copy = _copy_build_scripts(tmp_path)
    with open(copy / "xstate-restore.patch", "a") as patch:
        patch.write("\n")
    missed = subprocess.run(["bash", str(copy / "build-kernel.sh"), "--print-kernel"], capture_output=True, text=True)
    assert missed.returncode == 2 and "not built for the current key" in missed.stderr


PANICKING_KERNEL = """#!/bin/sh
echo "Kernel panic - not syncing: userspace - ptrace set fp regs failed, errno = 14"
exit 134
"""


def test_a_kernel_that_cannot_run_a_process_here_is_unavailable_with_the_cpu_named(tmp_path):
    """
    The smoke boot stands between a built kernel and the tests: a kernel that panics before
    its first process (an unpatched one on a CPU with AMX) makes --print-kernel exit 2 with
    the panic and this host's CPU, so the tests skip saying why instead of failing.
    """
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("the build script only builds on x86_64 Linux")
    if subprocess.run(["dpkg-query", "-W", "linux-source-6.1"], capture_output=True).returncode != 0:
        pytest.skip("the key names the installed linux-source-6.1, which is not installed")
    copy = _copy_build_scripts(tmp_path)
    env = dict(os.environ, RPISENSOR_UML_CACHE=str(tmp_path / "cache"))
    script = ["bash", str(copy / "build-kernel.sh"), "--print-kernel"]
    absent = subprocess.run(script, capture_output=True, text=True, env=env)
    entry = Path(absent.stderr.split("(no ", 1)[1].split(")", 1)[0])
    entry.mkdir(parents=True)
    (entry / "linux").write_text(PANICKING_KERNEL)
    (entry / "linux").chmod(0o755)
    for attempt in ("the smoke boot", "its record"):
        refused = subprocess.run(script, capture_output=True, text=True, env=env)
        assert refused.returncode == 2, attempt
        assert "cannot run a process on this host's CPU" in refused.stderr, attempt
        assert "errno = 14" in refused.stderr, attempt
        model = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        assert model.split(":", 1)[1].strip() in refused.stderr, attempt
        assert refused.stdout == "", attempt


def _copy_build_scripts(tmp_path: Path) -> Path:
    """A copy of everything build-kernel.sh reads, as tests/uml under C{tmp_path}."""
    copy = tmp_path / "tests" / "uml"
    copy.mkdir(parents=True)
    for name in ("build-kernel.sh", "kernel.config", "hz-1000.patch", "xstate-restore.patch", "smoke-init.sh"):
        (copy / name).write_bytes((guest.HERE / name).read_bytes())
    return copy

