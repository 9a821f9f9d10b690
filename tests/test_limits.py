"""
The server roles' limits and stops: connection limit, pending commands,
clients that do not read, failed sensor reads, and a graceful stop of
C{serve} and C{collect}.

Flow control is checked at unit level (StringTransport, FakeRunner, Clock);
the rest over real loopback TCP in process with the real reactor
(pytest-twisted). Every wait is for a condition (30 s deadline); nothing
asserts a duration. The idle timeout is in L{tests.test_admission}, on a
Clock; reads that hang are in L{tests.test_read_timeouts}, on a clock the
test advances.
"""

from __future__ import annotations

import threading

import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import build_collect_service
from rpisensor.net.limits import ServerLimits
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.pool import open_reader
from rpisensor.sensing.reader import InputReader
from rpisensor.roles.serve.service import SensorServerFactory, build_server_service
from rpisensor.store import StoreService
from rpisensor.testing import (
    FakeRunner,
    connect,
    listening_port,
    send_message,
    simulated_pins,
    start_server,
    stored_messages,
    wait_until,
)
from tests.support import LOOPBACK as LISTEN, close, open_client

# -- unit level: pending commands and a client that does not read ---------------


class FlowControlTests(SynchronousTestCase):
    """Reading from a client pauses on too many pending commands or a full send buffer."""

    def connect(self, max_pending: int = 3):
        clock = Clock()
        self.runner = FakeRunner()
        reader = InputReader(simulated_pins(clock=clock), [DEFAULT_INPUT], self.runner, clock, wall=clock.seconds)
        reader.setup()
        limits = ServerLimits(max_pending=max_pending, idle_timeout=0)
        factory = SensorServerFactory(reader, ListenSettings(limits=limits))
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        self.clock = clock
        return protocol, transport

    def finish_reads(self) -> None:
        self.clock.advance(0)
        self.runner.run_all()

    def test_max_pending_pauses_reading(self):
        """After max_pending unanswered 'go', reading pauses; once the read completes it resumes."""
        protocol, transport = self.connect(max_pending=3)
        protocol.dataReceived(b"go\0go\0")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"go\0")
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), b"")
        self.finish_reads()
        self.assertEqual(transport.value(), b"Button released\0" * 3)
        self.assertEqual(transport.producerState, "producing")

    def test_max_pending_bounds_one_segment(self):
        """A thousand 'go' in one segment are taken max_pending at a time, all answered in order."""
        protocol, transport = self.connect(max_pending=10)
        protocol.dataReceived(b"go\0" * 999 + b"ping\0")
        self.assertEqual(len(protocol._replies), 10)
        rounds = 0
        while transport.value().count(b"\0") < 1000:
            self.finish_reads()
            self.assertLessEqual(len(protocol._replies), 10)
            rounds += 1
        self.assertEqual(transport.value(), b"Button released\0" * 999 + b"pong\0")
        self.assertEqual(rounds, 100)
        self.assertEqual(transport.producerState, "producing")

    def test_instant_replies_behind_a_pending_one_count(self):
        """Pings queued behind a pending 'go' count toward max_pending, so reading pauses."""
        protocol, transport = self.connect(max_pending=3)
        protocol.dataReceived(b"go\0ping\0ping\0ping\0ping\0")
        self.assertEqual(transport.producerState, "paused")
        self.assertLessEqual(len(protocol._replies), 3)
        self.finish_reads()
        self.assertEqual(transport.value(), b"Button released\0" + b"pong\0" * 4)

    def test_nothing_delivered_after_the_connection_is_lost(self):
        """Commands held while paused are dropped when the peer goes, and start no reads."""
        protocol, transport = self.connect(max_pending=1)
        protocol.dataReceived(b"go\0go\0go\0")  # one taken, two held
        protocol.connectionLost(Failure(ConnectionDone()))
        self.finish_reads()
        self.clock.advance(0)
        self.assertEqual(self.runner.jobs, [])
        self.assertEqual(protocol.factory.reader.reads, 1)

    def test_instant_replies_do_not_count_as_pending(self):
        """Commands answered at once (ping) never pause reading."""
        protocol, transport = self.connect(max_pending=3)
        protocol.dataReceived(b"ping\0" * 10)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), b"pong\0" * 10)

    def test_full_send_buffer_pauses_reading(self):
        """When the transport pauses the protocol (client not reading), reading pauses."""
        protocol, transport = self.connect()
        protocol.pauseProducing()  # what a transport does when its send buffer is full
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_paused_until_both_reasons_clear(self):
        """Paused for a full send buffer and pending commands, reading resumes once both clear."""
        protocol, transport = self.connect(max_pending=2)
        protocol.dataReceived(b"go\0go\0")  # two pending: paused for "pending"
        protocol.pauseProducing()  # and the send buffer is "full"
        self.finish_reads()  # pending cleared; the send buffer is still full
        self.assertEqual(transport.value(), b"Button released\0" * 2)
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_commands_wait_while_replies_cannot_be_sent(self):
        """While the send buffer is full, received commands are held, not answered into it."""
        protocol, transport = self.connect(max_pending=100)
        protocol.pauseProducing()
        protocol.dataReceived(b"ping\0ping\0")
        self.assertEqual(transport.value(), b"")
        protocol.resumeProducing()
        self.assertEqual(transport.value(), b"pong\0pong\0")


# -- real loopback ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_max_connections(reactor):
    """
    The connection past --max-connections gets one busy line instead of a reply and is closed;
    one leaving makes room.
    """
    server = await start_server(reactor=reactor, limits=ServerLimits(max_connections=2))
    clients = []
    try:
        clients = [await open_client(reactor, server.port) for _ in range(2)]
        await wait_until(lambda: len(server.factory.connections) == 2, reactor)
        extra = await open_client(reactor, server.port)
        clients.append(extra)
        extra.transport.write(b"go\0")
        await extra.lost
        assert extra.received == b"error: busy: too many connections\0"
        assert server.factory.refused == 1
        # The two accepted connections are still served.
        clients[0].transport.write(b"ping\0")
        await wait_until(lambda: clients[0].received == b"pong\0", reactor)

        await close(clients[1])
        await wait_until(lambda: len(server.factory.connections) == 1, reactor)
        assert await send_message(server.port, "go", reactor) == "Button released"
        assert server.factory.refused == 1
    finally:
        for client in clients:
            await close(client)
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_failed_read_gets_error_reply(reactor):
    """A sensor read that raises gets 'error: reading failed: ...'; the connection stays usable."""
    server = await start_server(reactor=reactor, backend=simulated_pins(clock=reactor, edges=False))
    client = await connect(server.port, reactor)
    try:
        server.backend.fail_reads("the sensor is unplugged")
        assert await client.request("go") == "error: reading failed: the sensor is unplugged"
        server.backend.fail_reads(None)
        assert await client.request("go") == "Button released"
    finally:
        client.transport.loseConnection()
        await client.lost
        await server.stop()


async def connection_refused(reactor, port: int) -> bool:
    try:
        client = await open_client(reactor, port)
    except error.ConnectionRefusedError:
        return True
    await close(client)
    return False


@pytest_twisted.ensureDeferred
async def test_serve_graceful_stop(reactor):
    """Stopping serve answers the in-flight 'go', closes, stops listening and releases the pins."""
    backend = simulated_pins(clock=reactor, edges=False)  # a sensor that must be read
    reader, reader_service = open_reader(reactor, backend, [DEFAULT_INPUT])
    top = build_server_service(reactor, reader, reader_service, ListenSettings((LISTEN,)))
    top.startService()
    port = (await listening_port(top)).getHost().port
    assert backend.set_up_channels == {DEFAULT_INPUT.pin}
    client = await connect(port, reactor)
    stopped = None
    try:
        backend.pause_reads()
        go = client.request("go")
        await wait_until(lambda: backend.reads == 1, reactor)  # the read is in flight
        stopped = top.stopService()
        attempts = 1
        while not await connection_refused(reactor, port):  # the listener closes first
            attempts += 1
            assert attempts < 3000, "still accepting connections after stopService"
        assert not go.called
        backend.resume_reads()
        assert await go == "Button released"
        await client.lost
        await stopped
        assert backend.set_up_channels == frozenset()
        assert await connection_refused(reactor, port)
    finally:
        backend.resume_reads()
        if not client.lost.called:
            client.transport.abortConnection()
        if stopped is None:
            await top.stopService()


class BlockedWrites:
    """Wraps a store file's write so the test decides when the writer thread may go on."""

    def __init__(self, file) -> None:
        self._write = file.write
        self.entered = threading.Event()
        self.gate = threading.Event()
        file.write = self.write

    def write(self, records) -> None:
        self.entered.set()
        self.gate.wait()
        self._write(records)


@pytest_twisted.ensureDeferred
async def test_collect_stop_keeps_received_messages(reactor, tmp_path):
    """Messages received before collect's stop are all in the store file after it."""
    path = tmp_path / "readings.jsonl"
    top = build_collect_service(reactor, str(path), ListenSettings((LISTEN,)))
    top.startService()
    port = (await listening_port(top)).getHost().port
    store = next(child for child in top if isinstance(child, StoreService))
    blocked = BlockedWrites(store.file)
    appended = []
    append = store.append
    store.append = lambda record: (appended.append(record.message), append(record))[1]
    client = await open_client(reactor, port)
    stopped = None
    try:
        client.transport.write(b"first\0")
        await wait_until(blocked.entered.is_set, reactor)  # the writer thread holds "first"
        later = [f"message {i}" for i in range(100)]
        client.transport.write(b"".join(m.encode() + b"\0" for m in later))
        # 100 unstored messages (max-pending) pause the reporter: the last one waits, held.
        await wait_until(lambda: len(appended) == 100, reactor)
        stopped = top.stopService()
        blocked.gate.set()
        await stopped
        await client.lost
        assert stored_messages(path) == ["first"] + later
    finally:
        blocked.gate.set()
        if not client.lost.called:
            client.transport.abortConnection()
        if stopped is None:
            await top.stopService()


@pytest_twisted.ensureDeferred
async def test_collect_message_after_store_closed_is_logged(reactor, tmp_path):
    """A message arriving after the store closed is logged as an error, not lost silently."""
    path = tmp_path / "readings.jsonl"
    top = build_collect_service(reactor, str(path), ListenSettings((LISTEN,)))
    top.startService()
    port = (await listening_port(top)).getHost().port
    store = next(child for child in top if isinstance(child, StoreService))
    errors = []

    def observe(event):
        if event.get("log_level") == LogLevel.error:
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    client = await open_client(reactor, port)
    try:
        client.transport.write(b"before\0")
        await wait_until(lambda: stored_messages(path) == ["before"], reactor)
        store.stopService()
        store.stopService = lambda: None  # already stopped: the top service's stop skips it
        client.transport.write(b"too late\0")
        await wait_until(lambda: errors, reactor)
        (error,) = errors
        assert error["text"] == "too late"
        assert "closed" in error["error"]
        assert stored_messages(path) == ["before"]
    finally:
        globalLogPublisher.removeObserver(observe)
        await close(client)
        await top.stopService()
