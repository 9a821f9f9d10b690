"""
A peer that half-closes (sends its FIN after its last message, as
C{printf 'go\\0' | nc -N pi 22000} does) still gets its replies, and its
messages are still stored: on StringTransport, and over real loopback TCP
with C{shutdown(SHUT_WR)}. (TLS, which Twisted does not half-close, is in
L{tests.test_tls}.)
"""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.limits import ListenSettings, ServerLimits
from rpisensor.roles.collect.collector import build_collect_service
from rpisensor.testing import listening_port, simulated_pins, start_server, stored_messages, wait_until
from tests.support import LOOPBACK, CollectorHarness, ServerHarness, read_jsonl, replies


class ServeHalfCloseTests(SynchronousTestCase):
    def test_reply_pending_at_the_fin_goes_out_then_closes(self) -> None:
        """A C{go} whose read is under way when the FIN comes is answered, then the server closes."""
        harness = ServerHarness()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"go\0ping\0")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)  # the reply is still pending
        harness.finish_reads()
        self.assertEqual(replies(transport), [b"Button released", b"pong"])
        self.assertTrue(transport.disconnecting)

    def test_partial_message_at_the_fin_is_dropped(self) -> None:
        """Bytes after the last NUL are no message: they get no reply, the rest do."""
        harness = ServerHarness()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"ping\0pi")
        protocol.readConnectionLost()
        self.assertEqual(replies(transport), [b"pong"])
        self.assertTrue(transport.disconnecting)

    def test_held_commands_are_answered(self) -> None:
        """Commands held back by max_pending when the FIN comes are all answered, in order."""
        harness = ServerHarness(limits=ServerLimits(max_pending=1))
        protocol, transport = harness.connect()
        protocol.dataReceived(b"go\0go\0ping\0")
        protocol.readConnectionLost()
        while not transport.disconnecting:
            harness.finish_reads()
        self.assertEqual(replies(transport), [b"Button released", b"Button released", b"pong"])

    def test_write_side_closed(self) -> None:
        """When nothing more can be sent, the work in flight ends and the connection closes."""
        harness = ServerHarness()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"go\0")
        protocol.writeConnectionLost()
        self.assertTrue(protocol.closing)
        harness.finish_reads()
        self.assertTrue(transport.disconnecting)

    def test_reset_after_the_fin_stops_the_work(self) -> None:
        """A peer that half-closed and then went (RST) gets nothing more done for it."""
        harness = ServerHarness(limits=ServerLimits(max_pending=1))
        protocol, transport = harness.connect()
        protocol.dataReceived(b"go\0go\0")
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        harness.finish_reads()
        harness.finish_reads()
        self.assertEqual(harness.reader.reads, 1)


class CollectHalfCloseTests(SynchronousTestCase):
    def test_messages_waiting_for_the_disk_are_stored(self) -> None:
        """
        A reporter that sends a burst and its FIN while max_pending messages wait for the disk has
        every whole message stored, then is closed.
        """
        harness = CollectorHarness(self, limits=ServerLimits(max_pending=2))
        protocol, transport = harness.connect()
        protocol.dataReceived(b"one\0two\0three\0four\0fiv")
        protocol.readConnectionLost()
        while not transport.disconnecting:
            harness.write()
        self.assertEqual([r["message"] for r in read_jsonl(harness.path)], ["one", "two", "three", "four"])


def half_closed_exchange(port: int, data: bytes) -> bytes:
    """
    Send C{data} from a blocking socket, shut its write side (a FIN), and read until the server
    closes; return what was read.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while block := sock.recv(4096):
            received += block
        return received


@pytest_twisted.ensureDeferred
async def test_serve_answers_go_sent_before_the_fin(reactor):
    """
    Over real TCP: C{go} then a FIN, while the sensor read is held, is answered once the read
    finishes; then the server closes.
    """
    from twisted.internet.threads import deferToThread

    server = await start_server(
        reactor=reactor, limits=ServerLimits(idle_timeout=0), backend=simulated_pins(clock=reactor, edges=False)
    )
    try:
        server.backend.pause_reads()
        exchange: Deferred[bytes] = deferToThread(half_closed_exchange, server.port, b"go\0")
        await wait_until(lambda: any(c.closing for c in server.factory.connections), reactor)
        assert not exchange.called  # the FIN came; the reply waits for the read
        server.backend.resume_reads()
        assert await exchange == b"Button released\0"
        await wait_until(lambda: not server.factory.connections, reactor)
    finally:
        server.backend.resume_reads()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_collect_stores_messages_sent_before_the_fin(reactor, tmp_path):
    """Over real TCP: messages then a FIN are all stored, and the collector closes."""
    from twisted.internet.threads import deferToThread

    path = tmp_path / "readings.jsonl"
    top = build_collect_service(reactor, str(path), ListenSettings((LOOPBACK,), ServerLimits(idle_timeout=0)))
    top.startService()
    try:
        port = (await listening_port(top)).getHost().port
        burst = b"".join(f"message {i}\0".encode() for i in range(300))
        assert await deferToThread(half_closed_exchange, port, burst) == b""
        await wait_until(lambda: len(stored_messages(path)) == 300, reactor)
        assert stored_messages(path) == [f"message {i}" for i in range(300)]
    finally:
        await top.stopService()
