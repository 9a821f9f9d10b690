"""
Subscribers to C{serve}'s stream that speak protocol v2 by hand, for tests
that check what the server sends frame by frame (the real client,
C{poll --subscribe}, drops duplicates and so would hide them): a Twisted
protocol for servers in the test's process, and a blocking socket for
servers in another process (twistd). Both acknowledge each entry as it
arrives and note when it came (C{time.monotonic_ns()}).
"""

from __future__ import annotations

import json
import time

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineOnlyReceiver

from rpisensor.wire import v2
from tests.processes import connect_tcp


class Subscriber(LineOnlyReceiver):
    """
    A subscriber as the spec has it: hello, then subscribe after what it
    has (or C{None}: a live view); it acknowledges each entry as it arrives
    and keeps them all, with C{arrived[i]} the monotonic time of C{entries[i]}.
    """

    delimiter = b"\0"
    MAX_LENGTH = 64 * 1024

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.welcome: v2.Welcome | None = None
        self.entries: list = []
        self.arrived: list[int] = []
        self.errors: list[str] = []
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.sendLine(v2.encode(v2.Hello("subscribe", heartbeat=1.0)).encode())

    def when_entries(self, count: int) -> Deferred[None]:
        """Fires once C{count} entries have come (at once, not by polling: for timing them)."""
        if len(self.entries) >= count:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append((count, waiting))
        return waiting

    def lineReceived(self, line: bytes) -> None:
        now = time.monotonic_ns()
        text = line.decode("utf-8")
        if text.startswith("error:"):
            self.errors.append(text)
            return
        frame = v2.parse(text)
        if isinstance(frame, v2.Welcome):
            self.welcome = frame
            self.sendLine(v2.encode(v2.Subscribe(self.after)).encode())
        elif isinstance(frame, v2.Reading | v2.Gap):
            self.entries.append(frame)
            self.arrived.append(now)
            seq = frame.seq if isinstance(frame, v2.Reading) else frame.last
            self.sendLine(v2.encode(v2.Ack(seq)).encode())
            for waiter in [w for w in self._waiting if w[0] <= len(self.entries)]:
                self._waiting.remove(waiter)
                waiter[1].callback(None)
        elif isinstance(frame, v2.Heartbeat):
            self.sendLine(b"heartbeat")

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)

    def live(self) -> list[tuple[int, str, int]]:
        """C{(seq, sensor, value)} of every reading that is not a snapshot, in the order received."""
        readings = [e for e in self.entries if isinstance(e, v2.Reading) and not e.snapshot]
        return [(e.seq, e.sensor, e.value) for e in readings]

    @property
    def high(self) -> int:
        return max([seq for seq, _, _ in self.live()] + [0])


def subscribe(reactor, port: int, after: int | None, host: str = "127.0.0.1") -> Deferred[Subscriber]:
    """A L{Subscriber} connected to C{host:port}."""
    return connectProtocol(TCP4ClientEndpoint(reactor, host, port), Subscriber(after))


class RawSubscriber:
    """A blocking socket that sends hello and subscribe, then reads frames and acks each entry."""

    def __init__(self, port: int, after: int | None, host: str = "127.0.0.1") -> None:
        self.sock = connect_tcp(port, host)
        self._buffer = b""
        self.entries: list[dict] = []
        self.arrived: list[int] = []
        self.send('hello {"v":2,"role":"subscribe","heartbeat":5}')
        verb, self.welcome = self.next_frame()
        assert verb == "welcome", (verb, self.welcome)
        self.send("subscribe " + json.dumps({} if after is None else {"after": after}))

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\0")

    def next_frame(self) -> tuple[str, dict | None]:
        while b"\0" not in self._buffer:
            block = self.sock.recv(4096)
            if not block:
                raise AssertionError(f"the server closed the subscription; got {self._buffer!r}")
            self._buffer += block
        body, self._buffer = self._buffer.split(b"\0", 1)
        verb, _, rest = body.decode().partition(" ")
        if verb == "error:":
            raise AssertionError(f"the server said: {body.decode()}")
        return verb, json.loads(rest) if rest else None

    def next_entry(self) -> dict:
        """Read (and ack) the next reading, answering heartbeats on the way."""
        while True:
            verb, body = self.next_frame()
            if verb == "heartbeat":
                self.send("heartbeat")
            elif verb == "reading":
                self.entries.append(body)
                self.arrived.append(time.monotonic_ns())
                self.send(f'ack {{"seq":{body["seq"]}}}')
                return body
            else:
                raise AssertionError(f"unexpected frame {verb} {body}")

    def read_until(self, seq: int) -> None:
        """Read (and ack) entries until entry C{seq} has come."""
        while not self.entries or self.entries[-1]["seq"] < seq:
            self.next_entry()

    def read_to_end(self) -> list[tuple[str, dict | None]]:
        """Every frame still to come, until the server closes the connection."""
        frames = []
        while True:
            while b"\0" in self._buffer:
                body, self._buffer = self._buffer.split(b"\0", 1)
                verb, _, rest = body.decode().partition(" ")
                frames.append((verb, json.loads(rest) if rest.startswith("{") else rest or None))
            block = self.sock.recv(4096)
            if not block:
                return frames
            self._buffer += block

    def close(self) -> None:
        self.sock.close()
