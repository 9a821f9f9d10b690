"""
A client with several servers (C{--connect A --connect B}, or one name with
several addresses): each attempt tries them in turn, from the one that
worked last. On Twisted's doubles (a name resolver that answers with two
addresses) and over real loopback TCP.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rpisensor.net.reconnect import EndpointList, client_endpoint, reconnecting_client
from rpisensor.testing import wait_until
from tests.postgres import free_port


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


class TwoAddresses:
    """A name resolver that answers every name with 192.0.2.1 and 192.0.2.2."""

    def resolveHostName(self, receiver: IResolutionReceiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):  # fmt: skip
        receiver.resolutionBegan(_Resolution(hostName))
        for host in ("192.0.2.1", "192.0.2.2"):
            receiver.addressResolved(IPv4Address("TCP", host, portNumber))
        receiver.resolutionComplete()


class NameWithSeveralAddressesTests(SynchronousTestCase):
    def test_every_address_of_a_name_is_tried(self):
        """tcp:host=NAME with two addresses: when the first does not answer, the second is tried."""
        reactor = MemoryReactorClock()
        reactor.installNameResolver(TwoAddresses())
        endpoint = client_endpoint(reactor, "tcp:host=collectors.example.org:port=22000")
        endpoint.connect(Factory.forProtocol(Protocol))
        reactor.advance(1.0)  # past the stagger between attempts
        self.assertEqual([(host, port) for host, port, *_ in reactor.tcpClients],
                         [("192.0.2.1", 22000), ("192.0.2.2", 22000)])  # fmt: skip


class _Counting(Factory):
    """Counts the connections it serves (a stand-in server)."""

    def __init__(self) -> None:
        self.served = 0

    def buildProtocol(self, addr):
        self.served += 1
        return Protocol()


class _Client(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.append(self.transport.getPeer().port)


@pytest_twisted.ensureDeferred
async def test_the_servers_are_tried_in_turn(reactor):
    """
    A (nothing listening) then B: the client ends up on B, and after B goes away and
    comes back, it starts from B again rather than from A.
    """
    server = _Counting()
    port_a = free_port()
    listening = reactor.listenTCP(0, server, interface="127.0.0.1")
    port_b = listening.getHost().port
    factory = Factory.forProtocol(_Client)
    factory.connected = []
    client = reconnecting_client(
        reactor, (f"tcp:host=127.0.0.1:port={port_a}", f"tcp:host=127.0.0.1:port={port_b}"), factory, max_delay=1
    )
    assert isinstance(client.endpoint, EndpointList)
    client.startService()
    try:
        await wait_until(lambda: factory.connected == [port_b], reactor)
        assert client.endpoint.current == 1
        protocol = await client.whenConnected()
        protocol.transport.loseConnection()
        await wait_until(lambda: len(factory.connected) == 2, reactor)
        assert factory.connected == [port_b, port_b]
        assert server.served == 2
    finally:
        await client.stopService()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_attempt_fails_only_when_every_server_fails(reactor):
    """Nothing listens on either: the attempt fails (then the client backs off), naming the last failure."""
    endpoints = EndpointList([
        reconnecting_client(reactor, f"tcp:host=127.0.0.1:port={free_port()}", Factory()).endpoint
        for _ in range(2)
    ])  # fmt: skip
    attempt: Deferred = endpoints.connect(Factory.forProtocol(Protocol))
    failures = []
    attempt.addErrback(failures.append)
    await wait_until(lambda: failures, reactor)
    assert "refused" in failures[0].getErrorMessage().lower()
