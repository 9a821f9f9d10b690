"""
What the peer servers share: the command line, the simulated GPIO read, the
replies, and the read counter the benchmark asks for with SIGUSR2.

Kept free of Twisted and asyncio so each peer imports only what it needs.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

RELEASED = "Button released"  # the tutorial's button, pulled up and not pressed


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each simulated read takes")
    return parser.parse_args()


class SimulatedButton:
    """
    The same work as rpisensor's simulated backend per read: count it under a
    lock, then sleep the latency (only when it is not zero) in the calling thread.
    """

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.reads = 0
        self._lock = threading.Lock()

    def read(self) -> str:
        with self._lock:
            self.reads += 1
        if self.latency:
            time.sleep(self.latency)
        return RELEASED


def answer(body: bytes, button: SimulatedButton | None) -> str | None:
    """
    The reply text to one command, or None for an empty message. C{go} needs
    C{button} (None: the caller reads it elsewhere; then "go" returns "").
    """
    try:
        words = body.decode("utf-8").split()
    except UnicodeDecodeError:
        return "error: message is not valid UTF-8"
    if not words:
        return None
    verb = words[0].lower()
    if verb == "ping":
        return "pong"
    if verb == "go":
        return button.read() if button is not None else ""
    return f"error: unknown command {verb!r}"


def announce(port: int) -> None:
    """The line the benchmark waits for before it connects."""
    os.write(1, f"Listening on 127.0.0.1 (port {port})\n".encode())


def report_counters(button: SimulatedButton) -> None:
    """Answer SIGUSR2: one line the benchmark parses."""
    os.write(1, f"BENCH-COUNTERS reads={button.reads}\n".encode())
