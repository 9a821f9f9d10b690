"""
C1's collector path replayed in one thread: the CPU a reporter's catch-up
costs the collector per reading, on the reactor's side and in the store's
writes apart, without sockets, other processes or the machine's load.

    .venv/bin/python bench/collect_replay.py                # 100,000 readings, 5 runs: about 10 s
    .venv/bin/python bench/collect_replay.py --from DIR     # the rpisensor package in DIR instead

A collector (L{CollectorFactory} on a real SQLite store, as C{collect --store
store.sqlite} builds it) gets a reporter's hello on a C{StringTransport}, then
the readings as the reporter's frames, in reads of 64 KiB; after each read the
clock turns and the store's writes run (in this thread, timed apart with
C{time.thread_time}), so its acks go out as they would. Reported: CPU per
reading outside the writes (the reactor thread's share in C1), and in them (the
writer thread's), the median and the least of the runs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--from", dest="source", help="a directory holding another version's rpisensor package")
    args = parser.parse_args()
    if args.source:
        sys.path.insert(0, os.path.abspath(args.source))
    import rpisensor

    runs = [replay(args.readings) for _ in range(args.runs)]
    reactor = [r for r, _ in runs]
    writes = [w for _, w in runs]
    print(f"rpisensor from {os.path.dirname(os.path.dirname(rpisensor.__file__))}, {args.readings:,} readings, "
          f"{args.runs} runs: reactor side {statistics.median(reactor):.2f} us per reading (least "
          f"{min(reactor):.2f}), store writes {statistics.median(writes):.2f} us (least {min(writes):.2f})")  # fmt: skip


def replay(count: int) -> tuple[float, float]:
    """One catch-up of C{count} readings: (reactor-side, write) CPU µs per reading."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from rpisensor.entries import Reading
    from rpisensor.net.limits import ListenSettings
    from rpisensor.roles.collect.collector import CollectorFactory
    from rpisensor.store import StoreService, store_file_for
    from rpisensor.testing import FakeRunner, inline_runner
    from rpisensor.wire import v2

    written = [0.0]

    class Runner(FakeRunner):
        """The writer thread's jobs, run when the replay says, the writes' CPU counted apart."""

        def __call__(self, f, *args):
            if getattr(f, "__name__", "") not in ("write", "write_groups", "close"):
                return inline_runner(f, *args)  # where a stream stands: answered at once

            def timed(*a):
                start = time.thread_time()
                try:
                    return f(*a)
                finally:
                    written[0] += time.thread_time() - start

            return super().__call__(timed, *args)

    stream = "8f3a1c2e9b7d4a60"
    clock = Clock()
    clock.advance(time.time())
    runner = Runner()
    store = StoreService(clock, store_file_for(os.path.join(tempfile.mkdtemp(), "store.sqlite")), runner=runner)
    store.startService()
    factory = CollectorFactory(store, clock, ListenSettings(), wall=clock.seconds)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)))
    protocol.dataReceived(v2.encode(v2.Hello("report", "bench-pi", stream, 10.0, count)).encode() + b"\0")
    for _ in range(5):
        clock.advance(0)
        runner.run_all()
    frames = b"".join(
        v2.encode(Reading(sensor="button", value=seq % 2, text="Button pressed" if seq % 2 else "Button released",
                          ts=v2.format_timestamp(1764600000 + seq / 10), synced=True, stream=stream, seq=seq,
                          digest=f"{seq:016x}")).encode() + b"\0"  # fmt: skip
        for seq in range(1, count + 1)
    )
    reads = [frames[i : i + 65536] for i in range(0, len(frames), 65536)]
    gc.collect()
    written[0] = 0.0
    start = time.thread_time()
    for data in reads:
        protocol.dataReceived(data)
        clock.advance(0)
        runner.run_all()
        clock.advance(0)
    total = time.thread_time() - start
    stored = protocol.session.receiver.state.stored
    if stored != count:
        raise SystemExit(f"only {stored} of {count} readings were stored")
    store.stopService()
    runner.run_all()
    return 1e6 * (total - written[0]) / count, 1e6 * written[0] / count


if __name__ == "__main__":
    main()
