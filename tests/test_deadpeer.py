"""
Tests for rpisensor.net.deadpeer: the socket options, the watch's rules on
Clock with scripted kernel states, and, on this kernel, over real loopback
sockets: a peer that stops reading (its window closed) but answers the
kernel's probes is not declared dead, whereas TCP_USER_TIMEOUT would drop
it (which is why the watch exists).

The half-open link (a peer that vanishes) is in L{tests.test_halfopen}.
Nothing asserts a duration: the real-socket tests wait for conditions, or
for at least some time to pass, which a slow machine only lengthens.
"""

from __future__ import annotations

import fcntl
import platform
import socket
import struct
import termios
import time

import pytest
import pytest_twisted
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rpisensor.net.deadpeer import (
    DeadPeerDetection,
    DeadPeerWatch,
    Keepalive,
    TcpState,
    can_read_tcp_state,
    read_tcp_state,
    socket_of,
)
from rpisensor.net.reconnect import ReadyEndpoint
from tests.certs import escape, write_pki
from tests.processes import DEADLINE, wait_until

#: TCP_INFO's tcpi_state for an established connection.
ESTABLISHED = 1


class KeepaliveTests(SynchronousTestCase):
    def test_spread_over_the_timeout(self):
        """The first probe after half the timeout, three probes over the other half."""
        self.assertEqual(Keepalive.within(30), Keepalive(idle=15, interval=5, count=3))
        self.assertEqual(Keepalive.within(60), Keepalive(idle=30, interval=10, count=3))

    def test_whole_seconds_at_least_one(self):
        """The kernel counts whole seconds: short timeouts round up to one second each."""
        self.assertEqual(Keepalive.within(2), Keepalive(idle=1, interval=1, count=3))


class FakeHandleTransport(StringTransport):
    def __init__(self, handle):
        super().__init__()
        self.handle = handle

    def getHandle(self):
        return self.handle


def loopback_pair(test) -> tuple[socket.socket, socket.socket]:
    """A connected TCP client and server socket on loopback, closed at cleanup."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    for sock in (client, server):
        test.addCleanup(sock.close)
    return client, server


class SocketOptionTests(SynchronousTestCase):
    def test_keepalive_set_on_the_socket(self):
        """C{watch} turns keepalive on with the timeout's timing, on the transport's real socket."""
        client, _ = loopback_pair(self)
        clock = Clock()
        watch = DeadPeerDetection(30).watch(FakeHandleTransport(client), clock, lambda why: None)
        self.addCleanup(lambda: watch is not None and watch.stop())
        self.assertEqual(client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(
                [client.getsockopt(socket.IPPROTO_TCP, option)
                 for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)],
                [15, 5, 3],
            )  # fmt: skip
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # see the module docstring of deadpeer: not used
            self.assertEqual(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), 0)
        self.assertEqual(watch is not None, can_read_tcp_state())

    def test_not_tcp(self):
        """A Unix socket, or a transport with no socket, is not watched."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertIsNone(socket_of(FakeHandleTransport(a)))
        self.assertIsNone(socket_of(StringTransport()))
        self.assertIsNone(DeadPeerDetection(30).watch(StringTransport(), Clock(), lambda why: None))

    def test_socket_under_tls(self):
        """Under TLS the transport is TLSMemoryBIOProtocol: the socket is the wrapped transport's."""
        from twisted.internet.ssl import optionsForClientTLS
        from twisted.protocols.tls import TLSMemoryBIOFactory

        client, _ = loopback_pair(self)
        tls = TLSMemoryBIOFactory(optionsForClientTLS("localhost"), True, Factory.forProtocol(Protocol))
        protocol = tls.buildProtocol(None)
        protocol.makeConnection(FakeHandleTransport(client))
        self.assertNotIsInstance(protocol.getHandle(), socket.socket)
        self.assertIs(socket_of(protocol), client)


@pytest_twisted.ensureDeferred
async def test_real_tls_connection_is_watched(reactor, tmp_path):
    """A real C{tls:} client connection through ReadyEndpoint gets keepalive on its TCP socket."""
    pki = write_pki(tmp_path)
    port = await serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={escape(pki.server_key)}:certKey={escape(pki.server_cert)}",
    ).listen(Factory.forProtocol(Protocol))
    description = f"tls:host=localhost:port={port.getHost().port}:trustRoots={escape(pki.trust_dir)}"
    endpoint = ReadyEndpoint(clientFromString(reactor, description), description, reactor,
                             dead_peer=DeadPeerDetection(10))  # fmt: skip
    try:
        protocol = await endpoint.connect(Factory.forProtocol(Protocol))
        sock = socket_of(protocol.transport)
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
        protocol.transport.loseConnection()
    finally:
        await port.stopListening()


class Script:
    """Kernel states to hand to a watch, one per look; C{None} once they run out."""

    def __init__(self, *states: TcpState) -> None:
        self.states = list(states)

    def __call__(self) -> TcpState | None:
        return self.states.pop(0) if self.states else None


def run(states, timeout=10.0):
    """Run a watch over C{states}, one look per interval; return why it said dead (or None)."""
    clock = Clock()
    verdicts: list[str] = []
    watch = DeadPeerWatch(clock, timeout, Script(*states), verdicts.append)
    watch.start()
    for _ in range(len(states) + 1):
        clock.advance(watch.interval)
    assert not watch._loop.running  # stopped: dead, or the states ran out (connection closed)
    assert len(verdicts) <= 1
    return verdicts[0] if verdicts else None


class WatchTests(SynchronousTestCase):
    """DeadPeerWatch with a 10 s timeout, looking every 2 s."""

    def test_unacknowledged_data(self):
        """Data waiting for an acknowledgement that has not come for the timeout: dead."""
        states = [TcpState(unacked=3, probes=0, since_ack=t) for t in (2, 4, 6, 8, 10, 12)]
        self.assertIn("no acknowledgement of the data sent for 10 s", run(states))

    def test_acknowledged_in_time(self):
        """Data acknowledged now and then is alive, however long it goes on."""
        states = [TcpState(unacked=3, probes=0, since_ack=t % 9) for t in range(0, 100, 2)]
        self.assertIsNone(run(states))

    def test_write_after_a_quiet_spell(self):
        """
        One look that catches data just written after a long quiet spell (its ACK not back yet)
        is not death: the look before had nothing waiting.
        """
        states = [TcpState(unacked=0, probes=0, since_ack=t) for t in (2, 4, 6, 8, 10)]
        states += [TcpState(unacked=1, probes=0, since_ack=12), TcpState(unacked=0, probes=0, since_ack=0)]
        self.assertIsNone(run(states))

    def test_unanswered_probes(self):
        """Window or keepalive probes unanswered for the timeout: dead."""
        states = [TcpState(unacked=0, probes=p, since_ack=60) for p in (1, 1, 2, 2, 3, 3, 4)]
        self.assertIn("no answer to the kernel's probes for 10 s", run(states))

    def test_closed_window_with_answered_probes(self):
        """A peer that keeps its window closed but answers the probes is alive, for as long as it likes."""
        states = [TcpState(unacked=0, probes=(1 if i % 3 == 0 else 0), since_ack=30 + 2 * i)
                  for i in range(100)]  # fmt: skip
        self.assertIsNone(run(states))

    def test_probe_count_going_down_means_an_answer(self):
        """A lower probe count than before means one was answered: the timer starts again."""
        states = [TcpState(unacked=0, probes=p, since_ack=60) for p in (2, 3, 3, 3, 1, 1, 1, 1)]
        self.assertIsNone(run(states))

    def test_a_failing_look_is_logged(self):
        """A bug in a look stops the watch with a logged failure, not an unhandled error."""

        def broken():
            raise RuntimeError("cannot look")

        clock = Clock()
        watch = DeadPeerWatch(clock, 10.0, broken, lambda why: None)
        watch.start()
        clock.advance(watch.interval)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(watch._loop.running)

    def test_stops_when_the_socket_is_closed(self):
        """When the state can no longer be read (the socket closed), the watch stops quietly."""
        self.assertIsNone(run([TcpState(unacked=0, probes=0, since_ack=0)]))


# -- the kernel, for real ------------------------------------------------------------


def _kernel_at_least(major: int, minor: int) -> bool:
    numbers = platform.release().split("-")[0].split(".")
    try:
        return (int(numbers[0]), int(numbers[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def _closed_window(test, sndbuf=4096, rcvbuf=4096) -> tuple[socket.socket, socket.socket, int]:
    """
    A loopback connection whose server never reads, filled until the client
    cannot send more: the server's receive window is closed, and the client's
    kernel probes it. Returns the client, the server and the bytes sent.
    """
    listener = socket.socket()
    test.addCleanup(listener.close)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # inherited by the accepted socket
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.socket()
    test.addCleanup(client.close)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    client.connect(listener.getsockname())
    server, _ = listener.accept()
    test.addCleanup(server.close)
    client.setblocking(False)
    sent = 0

    def fill() -> bool:
        nonlocal sent
        try:
            while True:
                sent += client.send(b"x" * 1024)
        except BlockingIOError:
            pass
        # Nothing in flight, something waiting: the only reason is the closed window.
        state = read_tcp_state(client)
        return state is not None and state.unacked == 0 and _unsent(client) > 0

    wait_until(fill, describe=lambda: "the server's window never closed")
    return client, server, sent


def _unsent(sock: socket.socket) -> int:
    """Bytes in the socket's send queue (sent and unacknowledged, or not sent yet)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def _tcp_state_code(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


class RealClock:
    """The monotonic clock, for a watch driven by hand against a real socket."""

    def seconds(self) -> float:
        return time.monotonic()


def _read_all(server: socket.socket, expected: int) -> int:
    server.settimeout(DEADLINE)
    received = 0
    while received < expected:
        chunk = server.recv(65536)
        if not chunk:
            break
        received += len(chunk)
    return received


class KernelTests(SynchronousTestCase):
    TIMEOUT = 2.0

    def setUp(self):
        if not can_read_tcp_state():
            raise SkipTest("needs Linux's TCP_INFO")

    def test_paused_peer_is_not_declared_dead(self):
        """
        A server that stops reading (its window closed, the probes answered) for three times the
        timeout is alive: neither the kernel (keepalive as set) nor the watch drops it, and what
        waited goes through once it reads again.
        """
        client, server, sent = _closed_window(self)
        verdicts: list[str] = []
        set_up = DeadPeerDetection(self.TIMEOUT)
        watch = set_up.watch(FakeHandleTransport(client), Clock(), verdicts.append)  # sets keepalive
        watch.stop()  # driven by hand below, on the real clock
        watch = DeadPeerWatch(RealClock(), self.TIMEOUT, lambda: read_tcp_state(client), verdicts.append)
        started = time.monotonic()
        while time.monotonic() - started < 3 * self.TIMEOUT:
            time.sleep(watch.interval)
            watch.check()
            self.assertEqual(verdicts, [])
            self.assertEqual(_tcp_state_code(client), ESTABLISHED)
        state = read_tcp_state(client)
        self.assertEqual(state.unacked, 0)  # still only waiting for the window to open
        self.assertGreater(_unsent(client), 0)
        self.assertEqual(client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 0)
        self.assertEqual(_read_all(server, sent), sent)

    def test_user_timeout_drops_a_paused_peer(self):
        """
        Why the watch exists: with TCP_USER_TIMEOUT, Linux (5.11 and later) drops a connection whose
        peer keeps its window closed, even though the peer answers every probe.
        """
        if not _kernel_at_least(5, 11):
            raise SkipTest(f"kernel {platform.release()}: TCP_USER_TIMEOUT ignored a closed window before 5.11")
        client, _, _ = _closed_window(self)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.TIMEOUT * 1000))
        wait_until(lambda: _tcp_state_code(client) != ESTABLISHED,
                   describe=lambda: "the kernel kept the connection")  # fmt: skip
        with pytest.raises(OSError) as raised:
            client.send(b"more")
        assert raised.value.errno in (110, 32)  # ETIMEDOUT, or EPIPE once reported
