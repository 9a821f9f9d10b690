"""
The guest half of bench/edges.py's E1, run by pytest inside the User-Mode Linux guest
(tests/uml/guest.py boots it; never on the host): C{serve --gpio gpiod} built by the twistd
plugin on the guest's reactor, a v2 live-view subscriber on the guest's loopback, and the
tutorial's button line on the gpio-sim header chip flipped again and again.

For each flip it keeps, all on the guest's clocks: the monotonic time just before the sysfs
write and when the reading's frame reached the subscriber (the edge-to-subscriber latency),
and the wall-clock time of the write and the kernel's timestamp of the edge event (the part
the kernel's simulated interrupt took). Reads its job from C{edges-job.json} and writes
C{edges-latency.json}, both in C{$RPISENSOR_UML_RESULTS}.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(CHECKOUT), str(CHECKOUT / "tests" / "uml" / "guest_tests")]

from rpisensor.app.tap import Options, makeService  # noqa: E402
from rpisensor.testing import listening_port, wait_until  # noqa: E402
from simchip import header_chip  # noqa: E402
from tests.v2_subscriber import subscribe  # noqa: E402

#: BOARD pin 24, the default input (pull-up, active low), is line 8.
BUTTON_LINE = 8


@pytest.fixture
def job():
    if os.environ.get("RPISENSOR_UML_GUEST") != "1":
        pytest.skip("runs inside the UML guest only (bench/edges.py starts it)")
    results = Path(os.environ["RPISENSOR_UML_RESULTS"])
    return results, json.loads((results / "edges-job.json").read_text())


@pytest_twisted.ensureDeferred
async def test_edge_to_subscriber_latency(job, tmp_path):
    from twisted.internet import reactor

    results, settings = job
    rng = random.Random(settings["seed"])
    header = header_chip()
    header.pull_all_low()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    options = Options()
    options.parseOptions([
        "serve", "--gpio", "gpiod", "--listen", "tcp:0:interface=127.0.0.1",
        "--journal", str(tmp_path / "journal.sqlite"),
    ])  # fmt: skip
    top = makeService(options)
    top.startService()
    try:
        port = (await listening_port(top.role)).getHost().port
        edges: list[float] = []  # the kernel's timestamps, as the tracked state gets them
        top.role.factory.state.add_listener(lambda reading: edges.append(reading.time))
        subscriber = await subscribe(reactor, port, None)
        await wait_until(lambda: subscriber.entries, reactor)  # the snapshot
        samples = []
        for count in range(1, settings["samples"] + 1):
            # A random pause, so flips fall anywhere in the kernel's tick; never under 6 ms.
            await deferLater(reactor, rng.uniform(0.006, 0.016), lambda: None)
            pressed = count % 2 == 1
            wall = time.time()
            written = header.pull(BUTTON_LINE, not pressed)
            await subscriber.when_entries(count + 1).addTimeout(30, reactor)
            reading = subscriber.entries[count]
            assert (reading.value, reading.snapshot) == (int(pressed), False), reading
            assert len(edges) == count, f"flip {count}: the tracked state saw {len(edges)} changes"
            samples.append({
                "total_ms": (subscriber.arrived[count] - written) / 1e6,
                "kernel_ms": (edges[count - 1] - wall) * 1e3,
            })  # fmt: skip
        assert subscriber.errors == []
        assert top.role.factory.reader.reads == 0
        subscriber.transport.loseConnection()
        await subscriber.lost
    finally:
        await top.stopService()
        for number, handler in handlers.items():
            signal.signal(number, handler)
    (results / "edges-latency.json").write_text(json.dumps({
        "samples": samples, "kernel": platform.release(), "python": platform.python_version(),
    }))  # fmt: skip
