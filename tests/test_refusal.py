"""
Clients refused by a server that says why: a fake server on real loopback
TCP writes one C{error: ...} message to each connection and closes it, as
the access policy and the connection limits do. C{poll} and C{report} log
what it said and back off (the attempt numbers grow: a prompt reconnect
would keep them at 1). C{rpisensor query} against the same server is in
L{tests.test_query}.

In process with the real reactor (pytest-twisted). Every wait is for a
condition (30 s deadline); nothing asserts a duration.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher

from rpisensor.roles.poll.service import PollSettings, build_poll_service
from rpisensor.roles.report.service import ReportSettings, build_report_service
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.pool import open_reader
from rpisensor.testing import simulated_pins, wait_until

REFUSAL = "error: refused: 127.0.0.1 is not in --allow"


class Refuser(Protocol):
    """Says why it will not serve, then closes: what a refusing server does."""

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.transport.write(REFUSAL.encode() + b"\0")
        self.transport.loseConnection()


class RefusingServer(Factory):
    protocol = Refuser
    noisy = False

    def __init__(self) -> None:
        self.connections = 0


async def refused_client(reactor, build) -> tuple[list[dict], RefusingServer]:
    """
    Run the client C{build(reactor, endpoint)} against a refusing server until
    it has scheduled its third attempt; return the log events and the server.
    """
    server = RefusingServer()
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    service = build(reactor, f"tcp:host=127.0.0.1:port={port.getHost().port}")
    service.startService()
    try:
        await wait_until(lambda: any(e.get("attempt") == 3 for e in events), reactor)
    finally:
        globalLogPublisher.removeObserver(events.append)
        await service.stopService()
        await port.stopListening()
    return events, server


def assertBackedOff(events: list[dict], server: RefusingServer) -> None:
    retries = [e for e in events if str(e.get("log_format", "")).startswith("Reconnecting to")]
    assert [e["attempt"] for e in retries][:3] == [1, 2, 3]
    # backed off: 0.5 s, then 1 s (max_delay 1), each up to a quarter longer; never the prompt 0.2 s
    assert all(e["delay"] >= 0.5 for e in retries) and retries[1]["delay"] >= 1.0, retries
    said = [e for e in events if "the server said" in str(e.get("log_format", ""))]
    assert said and all(e["said"] == REFUSAL for e in said)
    assert len(said) == server.connections  # one line per refusal, no more
    assert not [e for e in events if "Scheduling retry" in str(e.get("log_format", ""))]


@pytest_twisted.ensureDeferred
async def test_poll_refused_backs_off(reactor):
    """poll logs the server's C{error:} line and waits longer after each refusal."""
    events, server = await refused_client(
        reactor, lambda reactor, endpoint: build_poll_service(reactor, PollSettings(endpoint, max_retry_delay=1.0))
    )
    assertBackedOff(events, server)


@pytest_twisted.ensureDeferred
async def test_report_refused_backs_off(reactor):
    """report logs the server's C{error:} line and waits longer after each refusal."""

    def build(reactor, endpoint):
        reader, reads = open_reader(reactor, simulated_pins(clock=reactor), [DEFAULT_INPUT])
        return build_report_service(reactor, reader, reads, ReportSettings((endpoint,), max_retry_delay=1.0))

    events, server = await refused_client(reactor, build)
    assertBackedOff(events, server)
