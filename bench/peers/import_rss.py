"""
What a role's imports cost in memory: in a fresh interpreter, import the
modules a running role had loaded, in steps, and print VmRSS after each
step, as JSON: ``[["step", KiB after it], ...]``.

The steps (each imports what the ones before did not):
  Python      the interpreter, as started
  Deferred    twisted.internet.defer, which imports asyncio (and with it ssl)
  reactor     twisted.internet.reactor: TCP, and with it pyOpenSSL and cryptography
  twistd      twisted.scripts.twistd and its plugin list (every installed plugin)
  the role    every other module the role had loaded, in the order it loaded them
              (rpisensor's, and what they import)
then, each on top of all that, the modules named after the file: what they
would add (prometheus_client: what --web adds).

Usage: python import_rss.py MODULES_FILE [MODULE ...]   (MODULES_FILE: one name a line, in load order)
"""

from __future__ import annotations

import json
import re
import sys
from importlib import import_module


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


def main() -> None:
    with open(sys.argv[1]) as listing:
        wanted = [line.strip() for line in listing if line.strip()]
    steps = [["Python", rss_kib()]]
    import_module("twisted.internet.defer")
    steps.append(["Deferred", rss_kib()])
    import_module("twisted.internet.reactor")
    steps.append(["reactor", rss_kib()])
    import_module("twisted.scripts.twistd")
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    list(getPlugins(IServiceMaker))
    steps.append(["twistd", rss_kib()])
    for name in wanted:
        if name not in sys.modules and name != "__main__":
            try:
                import_module(name)
            except Exception:
                pass  # a name a package set while it loaded (not a module of its own): its package brought it
    steps.append(["the role", rss_kib()])
    for name in sys.argv[2:]:
        import_module(name)
        steps.append([f"{name} (not loaded by the role)", rss_kib()])
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
