"""
Tests for L{rpisensor.net.direct}, the seam into Twisted's TCP transport: on real
loopback TCP, with the installed Twisted, a reply goes out before the reactor
turns when the transport holds nothing unsent, and queues behind what it holds
otherwise; other transports are never bypassed.
"""

from __future__ import annotations

import select
import socket

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from rpisensor.net.direct import direct_socket, write_now

#: Seconds a blocking read waits for bytes that must already be there: only ever waited out on a failure.
PATIENCE = 10.0


class _Made(Protocol):
    def connectionMade(self) -> None:
        self.factory.made.callback(self)


async def _connected(reactor):
    """A server-side protocol on real loopback TCP, and a blocking client socket to it."""
    factory = Factory.forProtocol(_Made)
    factory.made = Deferred()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    server = await factory.made
    return port, server, client


def _readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    sock.settimeout(PATIENCE)
    while len(data) < count:
        block = sock.recv(1 << 20)
        assert block, f"closed after {len(data)} of {count} bytes"
        data += block
    return data


async def _read_while_reactor_runs(reactor, sock: socket.socket, count: int) -> bytes:
    """Read C{count} bytes, letting the reactor turn between reads (it sends what Twisted buffered)."""
    sock.setblocking(False)
    data = b""
    for _ in range(100_000):
        try:
            data += sock.recv(1 << 20)
        except BlockingIOError:
            await deferLater(reactor, 0.001, lambda: None)
        if len(data) >= count:
            return data
    raise AssertionError(f"only {len(data)} of {count} bytes came")


@pytest_twisted.ensureDeferred
async def test_sent_before_the_reactor_turns_when_nothing_is_buffered(reactor):
    """With nothing unsent in the transport, write_now puts the bytes on the socket itself."""
    port, server, client = await _connected(reactor)
    try:
        sock = direct_socket(server.transport)
        assert sock is server.transport.getHandle()
        write_now(server.transport, sock, b"Button released\0")
        # The reactor does not run while this test blocks: the bytes can only be there if sent now.
        assert _readable(client, PATIENCE)
        assert _read_exactly(client, 16) == b"Button released\0"
    finally:
        client.close()
        server.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_queued_behind_bytes_the_transport_holds(reactor):
    """Bytes written through the transport and not yet sent go first: write_now does not overtake them."""
    port, server, client = await _connected(reactor)
    try:
        server.transport.write(b"first\0")  # buffered by Twisted until the reactor turns
        write_now(server.transport, direct_socket(server.transport), b"second\0")
        assert not _readable(client, 0)  # nothing went past Twisted's buffer
        assert await _read_while_reactor_runs(reactor, client, 13) == b"first\0second\0"
    finally:
        client.close()
        server.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_goes_through_the_transport(reactor):
    """
    To a client that does not read, write_now sends what the socket takes and hands the rest to
    the transport; what follows queues behind it; the client gets every byte, in order.
    """
    port, server, client = await _connected(reactor)
    try:
        server.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 16_384  # 4 MiB: more than the socket buffers hold
        sock = direct_socket(server.transport)
        write_now(server.transport, sock, big)
        write_now(server.transport, sock, b"end\0")
        assert await _read_while_reactor_runs(reactor, client, len(big) + 4) == big + b"end\0"
    finally:
        client.close()
        server.transport.loseConnection()
        await port.stopListening()


def test_other_transports_are_never_bypassed():
    """A test double (and so TLS, or anything not Twisted's TCP) gets no socket: plain writes only."""
    transport = StringTransport()
    assert direct_socket(transport) is None
    write_now(transport, None, b"pong\0")
    assert transport.value() == b"pong\0"
