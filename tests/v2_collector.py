"""
A small v2 collector for the reporter's tests, built from the real receiving
side (L{StreamRegistry}, L{Receiver}, L{StreamLink}) and an in-memory store: it
answers C{hello} with C{welcome}, stores readings and gaps in order, acks
what is stored, and beats its heart. It stands in for C{collect} until its
v2 side exists; the store is a list the test reads.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.stream.link import StreamLink
from rpisensor.stream.receiver import Receiver, Refusal, StreamRegistry, owner_tag
from rpisensor.entries import Gap, Reading
from rpisensor.wire import v2

RECEIVED = "2026-12-01T19:33:26.000Z"


class MemoryStore:
    """
    Records in a list, each batch durable at once; or, with C{slow}, only
    when the test calls L{finish} (a slow disk).
    """

    def __init__(self) -> None:
        self.records: list = []
        self.slow = False
        self.waiting: list[tuple[list, Deferred]] = []

    def __call__(self, records: list) -> Deferred:
        if self.slow:
            d: Deferred = Deferred()
            self.waiting.append((records, d))
            return d
        self.records.extend(records)
        return succeed(None)

    def finish(self) -> None:
        waiting, self.waiting = self.waiting, []
        for records, d in waiting:
            self.records.extend(records)
            d.callback(None)

    def readings(self) -> list[Reading]:
        return [r for r in self.records if isinstance(r, Reading)]

    def seqs(self) -> list[int]:
        return [r.seq for r in self.readings()]

    def gaps(self) -> list[Gap]:
        return [r for r in self.records if isinstance(r, Gap)]


class FakeCollector(NullTerminatedProtocol):
    """One reporter's connection to the fake collector."""

    link: StreamLink | None = None

    @property
    def receiver(self) -> Receiver | None:
        return None if self.link is None else self.link.side

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.frames: list[str] = []
        self.hello: v2.Hello | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.link is not None and data:
            self.link.heard()
        super().dataReceived(data)

    def messageReceived(self, text: str) -> None:
        self.frames.append(text)
        self.factory.frames.append(text)
        if self.link is not None:
            self.link.message(text)
        elif self.hello is None:
            self._hello(text)

    def _hello(self, text: str) -> None:
        if not text.startswith("hello "):
            self.factory.plain.append(text)  # a v1 reporter's text
            return
        hello = self.hello = v2.parse(text)
        opening = self.factory.registry.open(hello.device, hello.stream, owner_tag(hello.owner))
        Deferred.fromCoroutine(opening).addCallbacks(self._opened, self._refused)

    def _opened(self, state) -> None:
        factory, hello = self.factory, self.hello
        interval = hello.heartbeat if factory.heartbeats else None
        self.link = StreamLink(self.send, factory.clock, interval, lambda _: self.transport.abortConnection(),
                               lambda what: self.send(f"error: {what}"), lambda text: None)  # fmt: skip
        peer = f"{self.transport.getPeer()}"
        receiver = Receiver(
            factory.registry, state, factory.store, self.link.send, self.close, factory.clock, lambda: RECEIVED, peer,
            hello.last,
        )  # fmt: skip
        self.link.attach(receiver)
        self.send(v2.encode(v2.Welcome(acked=state.stored, heartbeat=hello.heartbeat, digest=state.digest)))

    def _refused(self, failure) -> None:
        failure.trap(Refusal)
        self.send(v2.encode(v2.Refused(failure.getErrorMessage())))
        self.transport.loseConnection()

    def send(self, text: str) -> None:
        if self.transport.disconnecting:
            return
        self.sendMessage(text)
        if self.link is not None and self.link.heartbeat is not None:
            self.link.heartbeat.sent()

    def close(self, reason: str) -> None:
        self.send(reason)
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if self.link is not None:
            self.link.stop()
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
        """A collector restarted: its registry rebuilt from what its store holds."""
        self.registry = StreamRegistry()
        for record in self.store.records:
            state = self.registry.begin(record.device, record.stream, 0)
            if record.last > state.stored:
                state.stored = state.accepted = record.last
                state.digest = record.digest or None
