"""
The reporter over real loopback TCP, in process with the real reactor
(pytest-twisted): the whole service from L{build_report_service} (outbox
file, read pool, reconnecting client, status listener on a unix socket)
against the fake v2 collector of L{tests.v2_collector}. Every wait is for a
condition (30 s deadline); nothing asserts a duration.
"""

from __future__ import annotations

import re

import pytest_twisted
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher

from rpisensor.roles.query import query
from rpisensor.roles.report.service import OutboxSettings, ReportSettings, build_report_service
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.pool import open_reader
from rpisensor.testing import simulated_pins, wait_until
from tests.v2_collector import FakeCollectorFactory


def reporter_service(reactor, tmp_path, port: int, **options):
    reader, reads = open_reader(reactor, simulated_pins(clock=reactor), [DEFAULT_INPUT])
    taken, acks = [], []
    settings = ReportSettings(
        (f"tcp:host=127.0.0.1:port={port}",), interval=0.05, max_retry_delay=1.0,
        outbox=OutboxSettings(str(tmp_path / "outbox.sqlite")), device="pi-loopback", **options,
    )  # fmt: skip
    service = build_report_service(reactor, reader, reads, settings, on_reading=taken.append, on_ack=acks.append)
    service.acks = acks
    return service, taken


async def stop_listening(port, collector: FakeCollectorFactory) -> None:
    await port.stopListening()
    for connection in list(collector.connections):
        connection.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_readings_taken_while_the_collector_is_down_arrive_once(reactor, tmp_path):
    """
    The collector goes away and comes back on the same port: what the reporter sampled
    meanwhile arrives after, every reading once, in order; status says what is going on.
    """
    collector = FakeCollectorFactory(reactor)
    port = reactor.listenTCP(0, collector, interface="127.0.0.1")
    number = port.getHost().port
    socket_path = str(tmp_path / "status.sock")
    service, taken = reporter_service(reactor, tmp_path, number, protocol="2", status_listen=f"unix:{socket_path}")
    service.startService()
    store = collector.store
    try:
        await wait_until(lambda: len(store.seqs()) >= 5, reactor)
        [line] = await query(reactor, f"unix:path={socket_path}", ["status"], 10)
        assert re.fullmatch(
            r"stream=[0-9a-f]{16} device=pi-loopback connected=yes protocol=2 outbox=\d+ "
            r"oldest_unacked=(none|\d+ \(\S+Z\)) last_ack=\d+ \(\d+\.\d s ago\) gaps=none",
            line,
        ), line
        await stop_listening(port, collector)
        stored_before = max(store.seqs())
        await wait_until(lambda: service.reporter.connection is None, reactor)
        await wait_until(lambda: service.outbox.journal.last >= stored_before + 20, reactor)
        [down] = await query(reactor, f"unix:path={socket_path}", ["status"], 10)
        assert " connected=no protocol=none " in down, down
        waiting = int(re.search(r" outbox=(\d+) ", down).group(1))
        assert waiting >= 20, down
        # The oldest unacknowledged is just after the last ack the reporter heard: at most one
        # past what the collector stored (an ack can be lost with the connection).
        oldest = int(re.search(r" oldest_unacked=(\d+) \(\S+Z\) ", down).group(1))
        assert 1 <= oldest <= max(store.seqs()) + 1, down
        taken_while_down = service.outbox.journal.last
        port = reactor.listenTCP(number, collector, interface="127.0.0.1")
        await wait_until(lambda: store.seqs() and max(store.seqs()) >= taken_while_down, reactor)
        # Stored is not yet heard: the collector's ack is on its way back.
        await wait_until(lambda: service.acks and service.acks[-1] >= taken_while_down, reactor)
    finally:
        await service.stopService()
        await stop_listening(port, collector)
    seqs = store.seqs()
    assert seqs == list(range(1, len(seqs) + 1))
    assert [(r.seq, r.ts, r.value, r.text) for r in store.readings()] == [
        (r.seq, r.ts, r.value, r.text) for r in taken[: len(seqs)]
    ]
    assert all(r.device == "pi-loopback" for r in store.readings())
    # The embedding program heard each acknowledgement, growing, up to what was stored.
    assert service.acks == sorted(set(service.acks)) and service.acks[-1] <= len(seqs)
    assert service.acks[-1] >= taken_while_down


class Silent(Protocol):
    """A v1 server that reads and never answers (DataServer3 as seen by the reporter)."""


@pytest_twisted.ensureDeferred
async def test_protocol_2_backs_off_from_a_v1_server(reactor, tmp_path):
    """--protocol 2 leaves a server that does not answer its hello, and waits longer each time."""
    server = Factory.forProtocol(Silent)
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    service, _ = reporter_service(reactor, tmp_path, port.getHost().port, protocol="2", hello_timeout=1.0)
    service.startService()
    try:
        await wait_until(lambda: any(e.get("attempt") == 3 for e in events), reactor)
    finally:
        globalLogPublisher.removeObserver(events.append)
        await service.stopService()
        await port.stopListening()
    retries = [e for e in events if str(e.get("log_format", "")).startswith("Reconnecting to")]
    assert [e["attempt"] for e in retries][:3] == [1, 2, 3]
    # backed off: 0.5 s, then 1 s (max_delay 1), each up to a quarter longer; never the prompt 0.2 s
    assert all(e["delay"] >= 0.5 for e in retries) and retries[1]["delay"] >= 1.0, retries
    left = [e for e in events if "With --protocol 2 no plain text is sent" in str(e.get("log_format", ""))]
    assert left
    assert not [e for e in events if "the server said" in str(e.get("log_format", ""))]
