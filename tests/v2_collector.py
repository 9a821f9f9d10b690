"""
A small v2 collector for the reporter's tests, built from the real receiving
side (L{StreamReceiver}, L{StreamRegistry}) and an in-memory store: it
answers C{hello} with C{welcome}, stores readings and gaps in order, acks
what is stored, and beats its heart. It stands in for C{collect} until its
v2 side exists; the store is a list the test reads.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.stream.heartbeat import Heartbeat
from rpisensor.stream.receiver import StreamReceiver, StreamRegistry
from rpisensor.entries import Gap, Reading
from rpisensor.wire import v2

RECEIVED = "2026-12-01T19:33:26.000Z"


class MemoryStore:
    """
    Records in a list, each durable at once; or, with C{slow}, only when the
    test calls L{finish} (a slow disk).
    """

    def __init__(self) -> None:
        self.records: list = []
        self.slow = False
        self.waiting: list[tuple[object, Deferred]] = []

    def __call__(self, record) -> Deferred:
        if self.slow:
            d: Deferred = Deferred()
            self.waiting.append((record, d))
            return d
        self.records.append(record)
        return succeed(None)

    def finish(self) -> None:
        waiting, self.waiting = self.waiting, []
        for record, d in waiting:
            self.records.append(record)
            d.callback(None)

    def readings(self) -> list[Reading]:
        return [r for r in self.records if isinstance(r, Reading)]

    def seqs(self) -> list[int]:
        return [r.seq for r in self.readings()]

    def gaps(self) -> list[Gap]:
        return [r for r in self.records if isinstance(r, Gap)]


class FakeCollector(NullTerminatedProtocol):
    """One reporter's connection to the fake collector."""

    receiver: StreamReceiver | None = None
    heartbeat: Heartbeat | None = None

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.frames: list[str] = []

    def dataReceived(self, data: bytes) -> None:
        if self.heartbeat is not None and data:
            self.heartbeat.heard()
        super().dataReceived(data)

    def messageReceived(self, text: str) -> None:
        self.frames.append(text)
        self.factory.frames.append(text)
        if self.receiver is None:
            self._hello(text)
            return
        frame = v2.parse(text)
        if isinstance(frame, (v2.Reading, v2.Gap)):
            self.receiver.receive(frame)

    def _hello(self, text: str) -> None:
        if not text.startswith("hello "):
            self.factory.plain.append(text)  # a v1 reporter's text
            return
        hello = v2.parse(text)
        peer = f"{self.transport.getPeer()}"
        self.receiver = StreamReceiver(
            self.factory.registry, hello, self.factory.store, self.send, self.close, self.factory.clock,
            lambda: RECEIVED, peer,
        )  # fmt: skip
        welcome = self.receiver.welcome()
        self.send(v2.encode(v2.Welcome(acked=welcome.acked, heartbeat=hello.heartbeat)))
        if hello.heartbeat is not None and self.factory.heartbeats:
            self.heartbeat = Heartbeat(
                self.factory.clock, hello.heartbeat, self.send, lambda _: self.transport.abortConnection()
            )

    def send(self, text: str) -> None:
        if self.transport.disconnecting:
            return
        self.sendMessage(text)
        if self.heartbeat is not None:
            self.heartbeat.sent()

    def close(self, reason: str) -> None:
        self.send(reason)
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.receiver is not None:
            self.receiver.connection_lost()
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        super().connectionLost(reason)


class FakeCollectorFactory(Factory):
    """
    The fake collector: one registry and one store across its connections
    (and across restarts, when the test keeps the factory).

    @ivar heartbeats: whether it sends heartbeats (a silent collector: C{False}).
    """

    protocol = FakeCollector
    noisy = False

    def __init__(self, clock, store: MemoryStore | None = None, heartbeats: bool = True) -> None:
        self.clock = clock
        self.store = store if store is not None else MemoryStore()
        self.registry = StreamRegistry()
        self.heartbeats = heartbeats
        self.connections: list[FakeCollector] = []
        self.frames: list[str] = []
        self.plain: list[str] = []

    def restart(self) -> None:
        """A collector restarted: its registry rebuilt from the store's high-water marks."""
        high: dict[tuple[str, str], int] = {}
        for record in self.store.records:
            key = (record.device, record.stream)
            last = record.seq if isinstance(record, Reading) else record.last
            high[key] = max(high.get(key, 0), last)
        self.registry = StreamRegistry(high)
