"""
C{poll --subscribe --store} over real loopback TCP against a small v2
server made of the stream's own parts (a L{JournalService} over a temp file
and a L{StreamLink} with a L{Sender} per connection), with pytest-twisted: it stores every
entry exactly once across a dropped link and a restart of the subscriber,
resuming where its store ends.

Every wait is for a condition (L{rpisensor.testing.wait_until}, 30 s
deadline); nothing asserts a duration.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import globalLogPublisher

from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.roles.poll.service import PollService, PollSettings, build_poll_service
from rpisensor.stream.journal import Journal
from rpisensor.stream.journal_service import JournalService
from rpisensor.entries import Reading
from rpisensor.stream.link import StreamLink
from rpisensor.stream.sender import SERVE, Position, Sender
from rpisensor.testing import stored_stream, wait_until
from rpisensor.wire import v2

DEVICE = "pi-kitchen"


class FakeServe(NullTerminatedProtocol):
    """The publishing side of a v2 serve, and nothing else: hello, subscribe, then the link."""

    link: StreamLink | None = None

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def messageReceived(self, text: str) -> None:
        if self.link is not None and self.link.side is not None:
            if text.startswith("ack "):
                self.factory.acked = max(self.factory.acked, v2.parse(text).seq)
            self.link.message(text)
            return
        frame = v2.parse(text)
        journal = self.factory.journal
        if isinstance(frame, v2.Hello):
            self.link = StreamLink(self.sendMessage, self.factory.clock, None, None, print, print)
            self.sendMessage(v2.encode(v2.Welcome(
                device=DEVICE, stream=journal.journal.stream, first=journal.journal.first,
                last=journal.journal.last, owner=journal.journal.secret,
            )))  # fmt: skip
        elif isinstance(frame, v2.Subscribe):
            self.factory.subscribed.append(frame.after)
            sender = Sender(journal, self.link.send_all, SERVE, lambda reason: self.transport.loseConnection(), 4)
            self.link.attach(sender)
            sender.start(Position(frame.after, frame.digest))

    def connectionLost(self, reason) -> None:
        if self.link is not None:
            self.link.stop()
        self.factory.connections.remove(self)


class FakeServeFactory(Factory):
    protocol = FakeServe

    def __init__(self, journal: JournalService, clock) -> None:
        self.journal = journal
        self.clock = clock
        self.connections: list[FakeServe] = []
        self.subscribed: list[int | None] = []
        self.acked = 0


def take(journal: JournalService, *values: int) -> Deferred:
    from twisted.internet.defer import gatherResults

    return gatherResults([
        journal.append(Reading(ts="2026-12-01T19:33:25.123Z", synced=True, sensor="button", value=v, text=f"value {v}")) for v in values
    ])  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_subscribe_stores_exactly_once_across_drops_and_restarts(reactor, tmp_path):
    """Every entry is stored once, in order, across a dropped link and a restarted subscriber."""
    journal = JournalService(reactor, Journal(tmp_path / "journal.sqlite", current_boot="b"), outbox=False)
    journal.startService()
    server_factory = FakeServeFactory(journal, reactor)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
    endpoint = f"tcp:host=127.0.0.1:port={port.getHost().port}"
    store = str(tmp_path / "readings.sqlite")
    logged = []

    def observe(event):
        if "resuming after seq" in event.get("log_format", ""):
            logged.append(event["seq"])

    got: list[Reading] = []
    globalLogPublisher.addObserver(observe)
    service = None
    try:
        await take(journal, 1, 0, 1)
        service = build_poll_service(reactor, PollSettings(endpoint, max_retry_delay=2, subscribe=True, store=store),
                                     on_reading=got.append)  # fmt: skip
        assert isinstance(service, PollService)
        service.startService()
        await wait_until(lambda: server_factory.acked >= 3, reactor)
        await take(journal, 0, 1)  # live, while connected
        await wait_until(lambda: server_factory.acked >= 5, reactor)

        server_factory.connections[0].transport.abortConnection()  # the link drops
        await take(journal, 0)
        await wait_until(lambda: server_factory.acked >= 6, reactor)
        await service.stopService()

        await take(journal, 1, 0)  # while the subscriber is stopped
        service = build_poll_service(reactor, PollSettings(endpoint, max_retry_delay=2, subscribe=True, store=store))
        service.startService()
        await wait_until(lambda: server_factory.acked >= 8, reactor)
    finally:
        globalLogPublisher.removeObserver(observe)
        if service is not None:
            await service.stopService()
        port.stopListening()
        await journal.stopService()
    assert server_factory.subscribed == [0, 5, 6]
    assert [r.seq for r in stored_stream(store)] == list(range(1, 9))
    assert [r.text for r in stored_stream(store)][:3] == ["value 1", "value 0", "value 1"]
    assert {r.device for r in stored_stream(store)} == {DEVICE}
    assert [r.seq for r in got] == list(range(1, 7))
    assert logged[:3] == [0, 5, 6]
