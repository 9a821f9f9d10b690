"""
Runs twistd with exactly the command line given (e.g. ``-n --pidfile=
rpisensor serve ...``), in this process, plus one thing: on SIGUSR2 it prints
``BENCH-COUNTERS reads=N jobs=M`` with the server's own InputReader counters
(found once with gc; nothing of the server is patched or wrapped). The
benchmark uses it where it reports reads performed (S2, S3); elsewhere it
runs the twistd script itself.

Usage: python rpisensor_counted.py -n --pidfile= rpisensor serve --gpio sim ...
"""

from __future__ import annotations

import gc
import os
import signal
import sys

_readers: list = []


def _report(signum, frame) -> None:
    if not _readers:
        from rpisensor.sensing.reader import InputReader

        _readers.extend(o for o in gc.get_objects() if isinstance(o, InputReader))
    reads = sum(r.reads for r in _readers)
    jobs = sum(r.jobs for r in _readers)
    os.write(1, f"BENCH-COUNTERS reads={reads} jobs={jobs} readers={len(_readers)}\n".encode())


def main() -> None:
    signal.signal(signal.SIGUSR2, _report)  # twistd uses SIGUSR2 only with --debug
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
