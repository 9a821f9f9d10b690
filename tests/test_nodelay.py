"""
Tests for L{rpisensor.net.nodelay}: a v2 stream's connections send small
frames at once (TCP_NODELAY), on real loopback TCP; other transports are left alone.
"""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from rpisensor.net.nodelay import send_at_once


class _Made(Protocol):
    def connectionMade(self) -> None:
        self.factory.made.callback(self)


def _no_delay(protocol) -> int:
    return protocol.transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest_twisted.ensureDeferred
async def test_tcp_connection_gets_nodelay(reactor):
    """On a TCP connection Nagle's algorithm is on by default; send_at_once turns it off."""
    server_factory = Factory.forProtocol(_Made)
    server_factory.made = Deferred()
    port = reactor.listenTCP(0, server_factory, interface="127.0.0.1")
    client_factory = ClientFactory.forProtocol(_Made)
    client_factory.made = Deferred()
    reactor.connectTCP("127.0.0.1", port.getHost().port, client_factory)
    client = await client_factory.made
    server = await server_factory.made
    try:
        assert _no_delay(server) == 0
        send_at_once(server.transport)
        assert _no_delay(server) != 0
        assert _no_delay(client) == 0  # only the transport it was given
    finally:
        client.transport.loseConnection()
        server.transport.loseConnection()
        await port.stopListening()


class _Gone:
    def setTcpNoDelay(self, enabled: bool) -> None:
        raise OSError(9, "Bad file descriptor")


def test_other_transports_are_left_alone():
    """A transport without TCP (unix sockets, test doubles) or one already gone: nothing, no error."""
    send_at_once(object())
    send_at_once(_Gone())
