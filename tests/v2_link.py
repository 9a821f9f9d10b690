"""
A raw v2 reporter for tests that talk to a real collector over loopback TCP:
it says hello, waits for the welcome, sends readings as the test gives them
and counts the acks. No outbox, no reconnecting: the test drives each step.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.entries import Reading
from rpisensor.wire import v2


class RawReporter(NullTerminatedProtocol):
    """
    @ivar welcome: the welcome's C{acked}, once it came.
    @ivar acked: the last ack's seq (0 before any).
    @ivar errors: the C{error:} lines the collector sent.
    """

    def __init__(self, device: str, stream: str, last: int | None = None) -> None:
        self.device, self.stream, self.last = device, stream, last
        self.welcome: int | None = None
        self.acked = 0
        self.errors: list[str] = []
        self.welcomed: Deferred = Deferred()
        self.lost: Deferred = Deferred()

    @classmethod
    async def connect(cls, reactor, port: int, device: str, stream: str, last: int | None = None) -> RawReporter:
        """Connect to C{127.0.0.1:port}, say hello; returns once welcomed."""
        protocol = cls(device, stream, last)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
        await protocol.welcomed
        return protocol

    def connectionMade(self) -> None:
        super().connectionMade()
        self.sendMessage(v2.encode(v2.Hello("report", self.device, self.stream, 10.0, self.last)))

    def messageReceived(self, text: str) -> None:
        if text.startswith("error:"):
            self.errors.append(text)
            return
        frame = v2.parse(text)
        if isinstance(frame, v2.Welcome) and self.welcome is None:
            self.welcome = frame.acked
            self.welcomed.callback(self)
        elif isinstance(frame, v2.Ack):
            self.acked = frame.seq

    def send(self, readings: list[Reading]) -> None:
        """The readings as reading frames, in one write."""
        self.transport.write(b"".join(v2.encode(r).encode() + b"\0" for r in readings))

    def close(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        if not self.welcomed.called:
            self.welcomed.errback(reason)
        self.lost.callback(None)
