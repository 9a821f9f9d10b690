"""
The v2 load generator of bench/streams.py's ingest scenario: N reporters, each
its own connection, device and stream, speaking protocol v2 to a collector
(hello, welcome, readings at a fixed rate, cumulative acks, heartbeats).

Every reading's acknowledgement is checked: an ack must be cumulative (never
below the last one, never beyond what was sent), each connection must be
welcomed with acked=0 (a new stream), and after the sending window every
connection must have been acknowledged through its last reading within
--drain seconds. Any `error:` line from the collector, an unexpected close or
a bad ack makes it exit 3. Latency of a reading is from its send to the ack
that covers it (CLOCK_MONOTONIC).

Prints `SENDING` when every connection is welcomed and the first readings go,
`SENT` when the window ends (so the driver can bracket the collector's CPU),
then one JSON object.

Usage: python stream_loadgen.py --port P [--reporters 200] [--rate 10] [--duration 30]
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import time

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import LoopingCall

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.wire import v2

HELLO_TIMEOUT = 30.0


class Failed(Exception):
    pass


class Reporter(NullTerminatedProtocol):
    """One simulated Pi: numbered readings at the rate, acks checked."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.device = f"bench-r{index:04d}"
        self.stream = secrets.token_hex(8)
        self.seq = 0
        self.acked = 0
        self.sent_at: dict[int, float] = {}
        self.welcomed = False
        self.loop: LoopingCall | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # as rpisensor's reporter does on a v2 link
        hello = v2.Hello("report", self.device, self.stream, heartbeat=10.0, last=0)
        self.sendMessage(v2.encode(hello))

    def messageReceived(self, text: str) -> None:
        if text.startswith("error"):
            self.run.fail(f"{self.device}: the collector said {text!r}")
            return
        try:
            frame = v2.parse(text)
        except v2.FrameError as e:
            self.run.fail(f"{self.device}: unparseable frame from the collector: {e}")
            return
        if isinstance(frame, v2.Welcome):
            if self.welcomed or frame.acked not in (0, None):
                self.run.fail(f"{self.device}: unexpected welcome {text!r}")
                return
            self.welcomed = True
            self.run.welcomed()
        elif isinstance(frame, v2.Ack):
            self._ack(frame.seq)
        elif not isinstance(frame, v2.Heartbeat):
            self.run.fail(f"{self.device}: unexpected frame {text!r}")

    def _ack(self, seq: int) -> None:
        if seq < self.acked or seq > self.seq:
            self.run.fail(f"{self.device}: ack {seq} after ack {self.acked}, with {self.seq} sent")
            return
        now = time.monotonic()
        for s in range(self.acked + 1, seq + 1):
            self.run.latencies.append(now - self.sent_at.pop(s))
        self.acked = seq
        self.run.maybe_done()

    def start(self, period: float) -> None:
        if self.run.draining or self.run.finished:
            return
        self.loop = LoopingCall(self.send_one)
        self.loop.start(period, now=True)

    def stop(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    def send_one(self) -> None:
        if self.run.draining or self.run.finished:
            return
        self.seq += 1
        now = time.time()
        reading = v2.Reading(stream=self.stream, seq=self.seq, ts=v2.format_timestamp(now), synced=True, sensor="button", value=self.seq % 2, text="Button pressed" if self.seq % 2 else "Button released")  # fmt: skip
        self.sent_at[self.seq] = time.monotonic()
        self.sendMessage(v2.encode(reading))
        self.run.sent += 1

    def connectionLost(self, reason) -> None:
        if not self.run.finished:
            self.run.fail(f"{self.device}: connection lost: {reason.getErrorMessage()}")


class Run:
    def __init__(self, args) -> None:
        self.args = args
        self.reporters: list[Reporter] = []
        self.latencies: list[float] = []
        self.sent = 0
        self._welcomed = 0
        self.sending = False
        self.draining = False
        self.finished = False
        self.error: str | None = None
        self.t_send = self.t_sent = self.t_acked = None
        self.cpu0 = self.cpu1 = 0.0

    def fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        self.finish()

    def welcomed(self) -> None:
        self._welcomed += 1
        if self._welcomed == self.args.reporters:  # (not len(reporters): some may not be connected yet)
            self.begin()

    def begin(self) -> None:
        print("SENDING", flush=True)
        self.sending = True
        self.t_send = time.monotonic()
        self.cpu0 = cpu_seconds()
        period = 1.0 / self.args.rate
        n = len(self.reporters)
        for i, r in enumerate(self.reporters):  # phases spread over one period
            reactor.callLater(period * i / n, r.start, period)
        reactor.callLater(self.args.duration, self.end_sending)

    def end_sending(self) -> None:
        for r in self.reporters:
            r.stop()
        self.t_sent = time.monotonic()
        self.cpu1 = cpu_seconds()
        print("SENT", flush=True)
        self.draining = True
        reactor.callLater(self.args.drain, self.drain_timeout)
        self.maybe_done()

    def maybe_done(self) -> None:
        if self.draining and not self.finished and all(r.acked == r.seq for r in self.reporters):
            self.t_acked = time.monotonic()
            self.finish()

    def drain_timeout(self) -> None:
        if not self.finished:
            behind = sum(r.seq - r.acked for r in self.reporters)
            self.fail(f"{behind} readings not acknowledged {self.args.drain:g} s after the last was sent")

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        for r in self.reporters:
            r.stop()
            if r.transport is not None:
                r.transport.loseConnection()
        reactor.callLater(0.2, reactor.stop)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--reporters", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="readings/s per reporter")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last acks")
    args = parser.parse_args()
    run = Run(args)

    class Factory(ClientFactory):
        def __init__(self, index: int) -> None:
            self.index = index

        def buildProtocol(self, addr):
            r = Reporter(run, self.index)
            r.factory = self
            run.reporters.append(r)
            return r

        def clientConnectionFailed(self, connector, reason) -> None:
            run.fail(f"reporter {self.index}: cannot connect: {reason.getErrorMessage()}")

    for i in range(args.reporters):
        reactor.connectTCP(args.host, args.port, Factory(i))

    def hello_timeout() -> None:
        if not run.sending and not run.finished:
            run.fail(f"only {run._welcomed} of {args.reporters} reporters welcomed in {HELLO_TIMEOUT:g} s")

    reactor.callLater(HELLO_TIMEOUT, hello_timeout)
    reactor.run()
    window = (run.t_sent - run.t_send) if run.t_sent and run.t_send else None
    result = {
        "reporters": args.reporters,
        "welcomed": run._welcomed,
        "sent": run.sent,
        "acked": sum(r.acked for r in run.reporters),
        "all_acked": run.error is None and run.t_acked is not None,
        "window_s": window,
        "readings_per_s": run.sent / window if window else None,
        "drain_s": (run.t_acked - run.t_sent) if run.t_acked and run.t_sent else None,
        "ack_p50_ms": 1000 * percentile(run.latencies, 0.5) if run.latencies else None,
        "ack_p99_ms": 1000 * percentile(run.latencies, 0.99) if run.latencies else None,
        "ack_max_ms": 1000 * max(run.latencies) if run.latencies else None,
        "lg_cpu_pct": 100 * (run.cpu1 - run.cpu0) / window if window else None,
        "error": run.error,
    }
    print(json.dumps(result), flush=True)
    return 0 if run.error is None else 3


if __name__ == "__main__":
    sys.exit(main())
