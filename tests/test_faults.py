"""
Links that break: a loopback TCP proxy, written here, sits between the client
roles and the server roles and cuts each connection after a (seeded) random
number of bytes, often in the middle of a message. C{poll} and C{report} must
reconnect and go on; C{collect} must store only whole messages.

In process with the real reactor (pytest-twisted). Every wait is for a
condition (30 s deadline); nothing asserts a duration.
"""

from __future__ import annotations

import random

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import build_collect_service
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.roles.poll.service import PollSettings, build_poll_service
from rpisensor.sensing.pool import open_reader
from rpisensor.roles.report.service import ReportSettings, build_report_service
from rpisensor.testing import (
    listening_port,
    simulated_pins,
    start_server,
    stored_messages,
    wait_until,
)


class _Side(Protocol):
    """One end of a proxied link; the L{_Link} forwards what it receives to the other end."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.closed = False
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.link.forward(self, data)

    def connectionLost(self, reason) -> None:
        self.closed = True
        self.link.side_lost(self)
        self.lost.callback(None)


class _Inbound(_Side):
    """The client's end: holds the client's bytes until the server's end is connected."""

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.link.inbound_made(self)


class _Link:
    """
    One client connection through the proxy: forwards bytes both ways until
    C{budget} bytes have passed, then delivers exactly the bytes up to the
    budget and cuts both ends.
    """

    def __init__(self, proxy: CuttingProxy, budget: int) -> None:
        self.proxy = proxy
        self.budget = budget
        self.inbound: _Inbound | None = None
        self.outbound: _Side | None = None
        self.cut = False
        self.to_server = self.to_client = 0

    def inbound_made(self, inbound: _Inbound) -> None:
        self.inbound = inbound
        endpoint = TCP4ClientEndpoint(self.proxy.reactor, "127.0.0.1", self.proxy.target_port)
        connectProtocol(endpoint, _Side(self)).addCallbacks(self._outbound_made, self._failed)

    def _outbound_made(self, outbound: _Side) -> None:
        self.outbound = outbound
        self.proxy.sides.add(outbound)
        if self.inbound.closed:
            outbound.transport.loseConnection()
        else:
            self.inbound.transport.resumeProducing()

    def _failed(self, failure) -> None:
        self.inbound.transport.abortConnection()

    def other(self, side: _Side) -> _Side | None:
        return self.outbound if side is self.inbound else self.inbound

    def forward(self, source: _Side, data: bytes) -> None:
        if self.cut:
            return
        destination = self.other(source)
        if destination is None or destination.closed:
            return
        passed = data[: self.budget]
        self.budget -= len(passed)
        if source is self.inbound:
            self.to_server += len(passed)
        else:
            self.to_client += len(passed)
        destination.transport.write(passed)
        if self.budget == 0:
            self.cut = True
            self.proxy.cuts.append((self.to_server, self.to_client))
            destination.transport.loseConnection()  # after the bytes up to the cut
            source.transport.abortConnection()

    def side_lost(self, side: _Side) -> None:
        self.proxy.sides.discard(side)
        other = self.other(side)
        if other is not None and not other.closed:
            other.transport.loseConnection()


class CuttingProxy(Factory):
    """
    Listens on loopback and forwards each connection to C{target_port}, cutting
    it after a random number of bytes (both directions counted) drawn from
    C{rng} between C{low} and C{high}. C{cuts} lists each cut link's bytes
    passed to the server and to the client.
    """

    noisy = False

    def __init__(self, reactor, target_port: int, rng: random.Random, low: int, high: int) -> None:
        self.reactor = reactor
        self.target_port = target_port
        self.rng = rng
        self.low, self.high = low, high
        self.cuts: list[tuple[int, int]] = []
        self.links = 0
        self.sides: set[_Side] = set()
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")

    @property
    def endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.port.getHost().port}"

    def buildProtocol(self, addr):
        self.links += 1
        inbound = _Inbound(_Link(self, self.rng.randint(self.low, self.high)))
        self.sides.add(inbound)
        return inbound

    async def close(self) -> None:
        await self.port.stopListening()
        for side in list(self.sides):
            side.transport.abortConnection()
        await wait_until(lambda: not self.sides, self.reactor)






@pytest_twisted.ensureDeferred
async def test_poll_through_cutting_proxy(reactor):
    """poll reconnects after each cut (often mid-reply) and keeps getting whole replies."""
    server = await start_server(reactor=reactor)
    # One exchange is 3 + 16 bytes: a link carries up to a few, and is often cut mid-reply.
    proxy = CuttingProxy(reactor, server.port, random.Random(20251125), 5, 70)
    replies: list[str] = []
    service = build_poll_service(
        reactor, PollSettings(proxy.endpoint, interval=0.05, timeout=10, max_retry_delay=0.2), on_reply=replies.append
    )
    service.startService()
    try:
        await wait_until(lambda: len(proxy.cuts) >= 4, reactor)
        after_cuts = len(replies)
        await wait_until(lambda: len(replies) > after_cuts, reactor)
        assert after_cuts > 0
        assert set(replies) == {"Button released"}
        assert proxy.links > 4
        reply_size = len(b"Button released\0")
        assert any(to_client % reply_size for _, to_client in proxy.cuts), "no cut was mid-reply"
    finally:
        await service.stopService()
        await proxy.close()
        await server.stop()
        await wait_until(lambda: not server.factory.connections, reactor)


@pytest_twisted.ensureDeferred
async def test_report_through_cutting_proxy_stores_only_whole_messages(reactor, tmp_path):
    """report reconnects after cuts mid-message; collect stores only whole messages, more come."""
    path = tmp_path / "readings.jsonl"
    collect = build_collect_service(reactor, str(path), ListenSettings(("tcp:0:interface=127.0.0.1",)))
    collect.startService()
    collect_port = (await listening_port(collect)).getHost().port
    # "Button released\0" is 16 bytes: most links are cut in the middle of one.
    proxy = CuttingProxy(reactor, collect_port, random.Random(1764075600), 5, 60)
    reader, reader_service = open_reader(reactor, simulated_pins(clock=reactor), [DEFAULT_INPUT])
    report = build_report_service(
        reactor, reader, reader_service,
        ReportSettings((proxy.endpoint,), interval=0.05, max_retry_delay=0.2, protocol="1"),
    )  # fmt: skip
    report.startService()
    try:
        await wait_until(lambda: len(proxy.cuts) >= 5, reactor)
        after_cuts = len(stored_messages(path))
        await wait_until(lambda: len(stored_messages(path)) > after_cuts, reactor)
        stored = stored_messages(path)
        assert after_cuts > 0
        assert set(stored) == {"Button released"}
        message_size = len(b"Button released\0")
        assert any(up % message_size for up, _ in proxy.cuts), "no cut was mid-message"
    finally:
        await report.stopService()
        await proxy.close()
        await wait_until(lambda: not collect.factory.connections, reactor)
        await collect.stopService()
    # Nothing partial arrived late either.
    assert set(stored_messages(path)) == {"Button released"}
