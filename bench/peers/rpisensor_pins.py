"""
Runs twistd with exactly the command line given (e.g. ``-n --pidfile=
rpisensor report --gpio sim --sim-pattern button=0.137,0.173 ...``), in this
process, plus one thing: on SIGUSR2 it prints ``BENCH-PINS [[time, channel,
high], ...]``, the simulated pins' level changes as the backend recorded them
(its own history, stamped with the reactor's clock, i.e. time.time(); found
once with gc; nothing of the reporter is patched or wrapped). The streams
benchmark's latency scenario (bench/streams.py, L3) uses it for the moment
of each pin change.

Usage: python rpisensor_pins.py -n --pidfile= rpisensor report --gpio sim ...
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys

_backends: list = []


def _report(signum, frame) -> None:
    if not _backends:
        from rpisensor.hw.simulated import SimulatedGPIO

        _backends.extend(o for o in gc.get_objects() if isinstance(o, SimulatedGPIO))
    changes = [[c.when, c.channel, c.high] for b in _backends for c in list(b.history)]
    os.write(1, f"BENCH-PINS {json.dumps(changes)}\n".encode())


def main() -> None:
    signal.signal(signal.SIGUSR2, _report)  # twistd uses SIGUSR2 only with --debug
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
