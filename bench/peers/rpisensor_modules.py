"""
Runs twistd with exactly the command line given (e.g. ``-n --pidfile=
rpisensor serve ...``), in this process, plus one thing: on SIGUSR2 it
writes the names of the modules loaded so far, in the order they were
loaded, one a line, to the file named by ``BENCH_MODULES_FILE``, then prints
``BENCH-MODULES n=N``. The memory benchmark (bench/cost.py K3) reads which
modules a role has loaded once it is idle; nothing of the role is patched.

Usage: BENCH_MODULES_FILE=modules.txt python rpisensor_modules.py -n --pidfile= rpisensor serve ...
"""

from __future__ import annotations

import os
import signal
import sys


def _report(signum, frame) -> None:
    names = list(sys.modules)
    with open(os.environ["BENCH_MODULES_FILE"], "w") as out:
        out.write("\n".join(names) + "\n")
    os.write(1, f"BENCH-MODULES n={len(names)}\n".encode())


def main() -> None:
    signal.signal(signal.SIGUSR2, _report)  # twistd uses SIGUSR2 only with --debug
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
