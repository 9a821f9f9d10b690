"""
S5, framing alone, in process: how many NUL-terminated messages per second a
protocol's framing turns into calls, with nothing else going on.

The input is N short messages (b"go\\0" each) fed to dataReceived in 64 KiB
chunks (so messages straddle chunk boundaries, as on a real socket) of a
protocol connected to a twisted.internet.testing.StringTransport:

  rpisensor  rpisensor.protocol.NullTerminatedProtocol, messageReceived does nothing
  lineonly   twisted.protocols.basic.LineOnlyReceiver, delimiter b"\\0",
             lineReceived does nothing

After timing, a counting subclass checks on the same input that every
message is delivered once, with the right body; a wrong count exits 1.
Each process times --passes passes over the whole input, each on a fresh
protocol with the garbage collector off, and reports the fastest pass (noise
only ever adds time); bench/run.py takes the median over processes.
Prints one JSON object. Usage: python framing.py --impl rpisensor --messages 1000000
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineOnlyReceiver

from rpisensor.net.framing import NullTerminatedProtocol

MESSAGE = b"go"


class RpisensorSink(NullTerminatedProtocol):
    def messageReceived(self, text: str) -> None:
        pass


class LineOnlySink(LineOnlyReceiver):
    delimiter = b"\0"
    MAX_LENGTH = 16 * 1024  # rpisensor's default limit

    def lineReceived(self, line: bytes) -> None:
        pass


class RpisensorCounter(NullTerminatedProtocol):
    count = 0

    def messageReceived(self, text: str) -> None:
        if text != "go":
            raise AssertionError(f"wrong message {text!r}")
        self.count += 1


class LineOnlyCounter(LineOnlySink):
    count = 0

    def lineReceived(self, line: bytes) -> None:
        if line != MESSAGE:
            raise AssertionError(f"wrong message {line!r}")
        self.count += 1


IMPLS = {"rpisensor": (RpisensorSink, RpisensorCounter), "lineonly": (LineOnlySink, LineOnlyCounter)}


def connected(cls):
    protocol = cls()
    protocol.makeConnection(StringTransport())
    return protocol


def feed(protocol, chunks) -> None:
    receive = protocol.dataReceived
    for chunk in chunks:
        receive(chunk)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=sorted(IMPLS), required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=64 * 1024)
    parser.add_argument("--passes", type=int, default=5, help="timed passes; the fastest is reported")
    args = parser.parse_args()
    sink, counter = IMPLS[args.impl]
    data = (MESSAGE + b"\0") * args.messages
    chunks = [data[i : i + args.chunk] for i in range(0, len(data), args.chunk)]

    feed(connected(sink), chunks[: max(1, len(chunks) // 10)])  # warm up
    passes = []
    for _ in range(args.passes):
        protocol = connected(sink)
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        feed(protocol, chunks)
        passes.append(time.perf_counter() - start)
        gc.enable()
    # Checked after timing: running a second subclass through the same base-class
    # code first would make its call sites polymorphic and slow the timed passes.
    check = connected(counter)
    feed(check, chunks)
    if check.count != args.messages:
        print(f"framing check failed: {check.count} of {args.messages} messages", file=sys.stderr)
        return 1
    seconds = min(passes)  # noise only ever adds time (as timeit advises)
    print(json.dumps({
        "impl": args.impl, "messages": args.messages, "chunk": args.chunk, "passes": passes,
        "seconds": seconds, "frames_per_s": args.messages / seconds,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
