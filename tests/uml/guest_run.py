"""
Runs inside the UML guest, started once by init.sh: pytest on the job's test files, in this
one process (starting Python inside UML is slow), each test's outcome appended to
C{results.jsonl} as it is known, so a guest that hangs still tells what it had done.

Reads C{$RPISENSOR_UML_RESULTS/job.json}, written by guest.py: C{{"pytest_args": [...]}}.
Brings up the loopback interface first, so guest tests can run servers on 127.0.0.1.
"""

import fcntl
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sh22x"  # struct ifreq: the name, then the flags in a 24-byte union


def bring_up_loopback() -> None:
    """
    Bring up the guest's C{lo}, which a new kernel starts with down, so tests can use
    127.0.0.1. Hand-written (the ioctl C{ip link set lo up} makes) because Python has no call
    for it, and running C{ip} would cost a process inside UML and need iproute2 on the host.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _, flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0)))
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


class ResultWriter:
    """
    A pytest plugin: one JSON line per test phase and per failed collection, each with the
    file's absolute path (a node id names a file outside the rootdir by no path at all).
    """

    def __init__(self, path: Path):
        self._file = open(path, "a", encoding="utf-8")
        self._paths: dict[str, str] = {}

    def _write(self, **record):
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def pytest_itemcollected(self, item):
        self._paths[item.nodeid] = str(item.path)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        outcome = yield
        report = outcome.get_result()
        if report.failed:
            self._write(nodeid=report.nodeid, path=str(collector.path), when="collect", outcome="failed",
                        longrepr=str(report.longrepr), duration=0.0)

    def pytest_runtest_logreport(self, report):
        outcome = report.outcome
        longrepr = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            longrepr = report.longrepr[2]
        elif report.longrepr is not None:
            longrepr = str(report.longrepr)
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        sections = "".join(f"\n--- {name}\n{text}" for name, text in report.sections if text)
        self._write(nodeid=report.nodeid, path=self._paths.get(report.nodeid, ""), when=report.when,
                    outcome=outcome, longrepr=longrepr + sections, duration=report.duration)

    def close(self):
        self._file.close()


def main() -> int:
    results = Path(os.environ["RPISENSOR_UML_RESULTS"])
    job = json.loads((results / "job.json").read_text(encoding="utf-8"))
    with open(results / "python-uptime", "w") as uptime:
        uptime.write(Path("/proc/uptime").read_text().split()[0])
    bring_up_loopback()
    writer = ResultWriter(results / "results.jsonl")
    started = time.monotonic()
    try:
        code = pytest.main(job["pytest_args"], plugins=[writer])
    finally:
        writer.close()
    (results / "pytest-seconds").write_text(f"{time.monotonic() - started:.3f}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
