"""
Runs twistd exactly as the command line given (e.g. ``-n --pidfile= rpisensor
serve ...``), in this process, plus one thing: on SIGUSR2 it prints
``BENCH-COUNTERS reads=N jobs=M`` with the server's own InputReader counters
(found with gc, nothing of the server is patched). The benchmark uses it where
it reports reads performed (S2, S3); elsewhere it runs the twistd script itself.
"""

from __future__ import annotations

import gc
import os
import signal
import sys


def _report(signum, frame) -> None:
    from rpisensor.reader import InputReader

    readers = [o for o in gc.get_objects() if isinstance(o, InputReader)]
    reads = sum(r.reads for r in readers)
    jobs = sum(r.jobs for r in readers)
    os.write(1, f"BENCH-COUNTERS reads={reads} jobs={jobs} readers={len(readers)}\n".encode())


def main() -> None:
    signal.signal(signal.SIGUSR2, _report)  # twistd uses SIGUSR2 only with --debug
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
