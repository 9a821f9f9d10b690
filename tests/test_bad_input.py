"""
Garbage, floods and misbehaving peers against C{serve} and C{collect} over
real loopback TCP, in process with the real reactor (pytest-twisted).

Every case ends with a fresh client being served: C{serve} answers C{go} with
C{Button released}, C{collect} stores a fresh message. Every wait is for a
condition (L{rpisensor.testing.wait_until}, 30 s deadline); nothing asserts a
duration.
"""

from __future__ import annotations

import json
import resource
import socket
from contextlib import asynccontextmanager
from itertools import count

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import build_collect_service
from rpisensor.net.limits import ServerLimits
from rpisensor.testing import listening_port, send_message, start_server, wait_until
from tests.support import LOOPBACK as LISTEN, RawClient, close, open_client, reset_socket

ROLES = ["serve", "collect"]


# -- clients ------------------------------------------------------------------


# -- the two server roles ------------------------------------------------------




class ServeRole:
    """A sensor server from L{rpisensor.testing.start_server}."""

    name = "serve"

    def __init__(self, reactor, server) -> None:
        self.reactor = reactor
        self.server = server
        self.port = server.port
        self.factory = server.factory

    @classmethod
    async def start(cls, reactor, tmp_path, limits: ServerLimits) -> ServeRole:
        return cls(reactor, await start_server(reactor=reactor, limits=limits))

    async def assert_healthy(self) -> None:
        """A fresh client's C{go} is answered."""
        assert await send_message(self.port, "go", self.reactor) == "Button released"

    async def stop(self) -> None:
        await self.server.stop()


class CollectRole:
    """A collector from L{build_collect_service} storing to a JSON Lines file."""

    name = "collect"

    def __init__(self, reactor, top, path, port: int) -> None:
        self.reactor = reactor
        self.top = top
        self.path = path
        self.port = port
        self.factory = top.factory
        self._fresh = count(1)

    @classmethod
    async def start(cls, reactor, tmp_path, limits: ServerLimits) -> CollectRole:
        path = tmp_path / "readings.jsonl"
        top = build_collect_service(reactor, str(path), ListenSettings((LISTEN,), limits))
        top.startService()
        port = await listening_port(top)
        return cls(reactor, top, path, port.getHost().port)

    def stored(self) -> list[str]:
        """The messages in the store file (whole lines only: the writer may be mid-line)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").split("\n")[:-1]
        return [json.loads(line)["message"] for line in lines]

    async def assert_healthy(self) -> str:
        """A fresh client's message is stored; returns its text."""
        text = f"fresh message {next(self._fresh)}"
        client = await open_client(self.reactor, self.port)
        try:
            client.transport.write(text.encode() + b"\0")
            await wait_until(lambda: text in self.stored(), self.reactor)
        finally:
            await close(client)
        return text

    async def stop(self) -> None:
        await self.top.stopService()


@asynccontextmanager
async def running(role: str, reactor, tmp_path, limits: ServerLimits = ServerLimits()):
    """Run one server role; on exit, wait for its connections to end, then stop it."""
    cls = ServeRole if role == "serve" else CollectRole
    server = await cls.start(reactor, tmp_path, limits)
    try:
        yield server
        await wait_until(lambda: not server.factory.connections, reactor)
    finally:
        await server.stop()


def role_params(test):
    return pytest.mark.parametrize("role", ROLES)(test)


# -- the cases -----------------------------------------------------------------


@role_params
@pytest_twisted.ensureDeferred
async def test_megabyte_without_nul(reactor, tmp_path, role):
    """One MiB with no NUL closes that connection, stores nothing, and the server goes on."""
    async with running(role, reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"x" * (1024 * 1024))
        await client.lost
        assert client.received == b""
        if role == "collect":
            fresh = await server.assert_healthy()
            assert server.stored() == [fresh]
        else:
            await server.assert_healthy()


@role_params
@pytest_twisted.ensureDeferred
async def test_slow_trickle_without_nul(reactor, tmp_path, role):
    """Many small writes with no NUL close the connection once over --max-message-bytes."""
    limits = ServerLimits(max_message_bytes=1024)
    async with running(role, reactor, tmp_path, limits) as server:
        client = await open_client(reactor, server.port)
        client.transport.setTcpNoDelay(True)
        sent = 0
        while not client.closed:
            assert sent <= 100 * limits.max_message_bytes, "the trickle was never cut off"
            client.transport.write(b"abcdefghijklmnop")
            sent += 16
            await deferLater(reactor, 0.001, lambda: None)
        assert sent > limits.max_message_bytes
        assert client.received == b""
        if role == "collect":
            fresh = await server.assert_healthy()
            assert server.stored() == [fresh]
        else:
            await server.assert_healthy()


@pytest_twisted.ensureDeferred
async def test_serve_answers_commands_before_an_overlong_message(reactor, tmp_path):
    """The commands before an over-long message are answered before the connection closes."""
    limits = ServerLimits(max_message_bytes=1024)
    async with running("serve", reactor, tmp_path, limits) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"ping\0go\0" + b"x" * 2000)
        await client.lost
        assert client.replies() == ["pong", "Button released"]
        await server.assert_healthy()


@pytest_twisted.ensureDeferred
async def test_collect_stores_messages_before_an_overlong_message(reactor, tmp_path):
    """The messages before an over-long message are stored; the over-long one is not."""
    limits = ServerLimits(max_message_bytes=1024)
    async with running("collect", reactor, tmp_path, limits) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"Button pressed\0Button released\0" + b"x" * 2000)
        await client.lost
        fresh = await server.assert_healthy()
        assert server.stored() == ["Button pressed", "Button released", fresh]


@pytest_twisted.ensureDeferred
async def test_serve_invalid_utf8_then_go(reactor, tmp_path):
    """Invalid UTF-8 gets an error reply and the next command on the same connection is answered."""
    async with running("serve", reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"\xff\xfego\0go\0")
        await wait_until(lambda: len(client.replies()) >= 2, reactor)
        invalid, go = client.replies()
        assert invalid.startswith("error: message is not valid UTF-8")
        assert go == "Button released"
        assert not client.closed
        await close(client)
        await server.assert_healthy()


@pytest_twisted.ensureDeferred
async def test_collect_invalid_utf8_then_valid(reactor, tmp_path):
    """An invalid UTF-8 message is dropped; the valid one after it, same connection, is stored."""
    async with running("collect", reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"Button \xc3\x28pressed\0Button pressed\0")
        await wait_until(lambda: "Button pressed" in server.stored(), reactor)
        assert not client.closed
        await close(client)
        fresh = await server.assert_healthy()
        assert server.stored() == ["Button pressed", fresh]


@pytest_twisted.ensureDeferred
async def test_serve_empty_messages(reactor, tmp_path):
    """Empty messages get no reply; the commands around them are answered in order."""
    async with running("serve", reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"\0\0go\0\0\0ping\0\0")
        await wait_until(lambda: len(client.replies()) >= 2, reactor)
        client.transport.write(b"help\0")  # a reply to an empty message would come before this
        await wait_until(lambda: len(client.replies()) >= 3, reactor)
        assert client.replies() == [
            "Button released",
            "pong",
            'commands: go | read NAME | list | ping | help | subscribe [{"after":N}] | status | '
            "sim NAME press|release|toggle",
        ]
        await close(client)
        await server.assert_healthy()


@pytest_twisted.ensureDeferred
async def test_collect_empty_messages(reactor, tmp_path):
    """Empty messages neither close the connection nor disturb the messages around them."""
    async with running("collect", reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"\0\0Button pressed\0\0\0Button released\0\0")
        await wait_until(lambda: "Button released" in server.stored(), reactor)
        assert not client.closed
        await close(client)
        fresh = await server.assert_healthy()
        assert server.stored() == ["Button pressed", "Button released", fresh]  # no empty records


@pytest_twisted.ensureDeferred
async def test_serve_ten_thousand_commands_in_one_write(reactor, tmp_path):
    """10,000 commands in one write get 10,000 replies, in order."""
    async with running("serve", reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"go\0ping\0" * 5000)
        await wait_until(lambda: client.received.count(b"\0") >= 10000, reactor)
        assert client.replies() == ["Button released", "pong"] * 5000
        await close(client)
        await server.assert_healthy()


@pytest_twisted.ensureDeferred
async def test_collect_ten_thousand_messages_in_one_write(reactor, tmp_path):
    """10,000 messages in one write are all stored, in order."""
    async with running("collect", reactor, tmp_path) as server:
        messages = [f"message {i:05d}" for i in range(10000)]
        client = await open_client(reactor, server.port)
        client.transport.write(b"".join(m.encode() + b"\0" for m in messages))
        await wait_until(lambda: len(server.stored()) >= 10000, reactor)
        await close(client)
        fresh = await server.assert_healthy()
        assert server.stored() == messages + [fresh]


@role_params
@pytest_twisted.ensureDeferred
async def test_one_byte_per_write(reactor, tmp_path, role):
    """Messages sent one byte per write are framed as if sent whole."""
    wire, expected = {
        "serve": (b"ping\0go\0read button\0", ["pong", "Button released", "Button released"]),
        "collect": (b"Button pressed\0Button released\0", ["Button pressed", "Button released"]),
    }[role]
    async with running(role, reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.setTcpNoDelay(True)
        for i in range(len(wire)):
            client.transport.write(wire[i : i + 1])
            await deferLater(reactor, 0, lambda: None)  # one reactor turn: the byte goes out alone
        if role == "serve":
            await wait_until(lambda: len(client.replies()) >= len(expected), reactor)
            assert client.replies() == expected
            await close(client)
            await server.assert_healthy()
        else:
            await wait_until(lambda: len(server.stored()) >= len(expected), reactor)
            await close(client)
            fresh = await server.assert_healthy()
            assert server.stored() == expected + [fresh]


@pytest_twisted.ensureDeferred
async def test_serve_unknown_commands(reactor, tmp_path):
    """Unknown commands and bad arguments get error replies; the connection stays usable."""
    async with running("serve", reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"frobnicate\0read nosuch\0go extra\0read\0GO\0")
        await wait_until(lambda: len(client.replies()) >= 5, reactor)
        assert client.replies() == [
            "error: unknown command 'frobnicate'; send 'help' for the list",
            "error: no input named 'nosuch'; inputs are: button",
            "error: go takes no arguments",
            "error: usage: read NAME (send 'list' for the names)",
            "Button released",
        ]
        assert not client.closed
        await close(client)
        await server.assert_healthy()


@pytest_twisted.ensureDeferred
async def test_collect_command_words_are_just_text(reactor, tmp_path):
    """The collector sends nothing back to command-like messages and stores them as text."""
    async with running("collect", reactor, tmp_path) as server:
        client = await open_client(reactor, server.port)
        client.transport.write(b"frobnicate\0go\0help\0")
        await wait_until(lambda: len(server.stored()) >= 3, reactor)
        assert client.received == b""
        await close(client)
        fresh = await server.assert_healthy()
        assert server.stored() == ["frobnicate", "go", "help", fresh]


@pytest.fixture
def enough_descriptors():
    """Raise the soft RLIMIT_NOFILE for 1,000 loopback connections (2 fds each), or skip."""
    needed = 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@role_params
@pytest_twisted.ensureDeferred
async def test_thousand_idle_connections(reactor, tmp_path, role, enough_descriptors):
    """With 1,000 idle connections held open, a fresh client is still served."""
    async with running(role, reactor, tmp_path) as server:
        clients: list[RawClient] = []
        try:
            for _ in range(20):  # in batches of 50: the listen backlog is 50
                batch = [open_client(reactor, server.port) for _ in range(50)]
                clients += await gatherResults(batch)
            await wait_until(lambda: len(server.factory.connections) == 1000, reactor)
            await server.assert_healthy()
            assert not any(client.closed for client in clients)
        finally:
            for client in clients:
                client.transport.loseConnection()
            for client in clients:
                await client.lost


@role_params
@pytest_twisted.ensureDeferred
async def test_reset_mid_message(reactor, tmp_path, role):
    """Connections reset (RST) in the middle of a message leave no partial message stored."""
    async with running(role, reactor, tmp_path) as server:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port))
            try:
                whole = b"go\0" if role == "serve" else b"Button pressed\0"
                sock.sendall(whole + b"Button rel")
                # The partial message has reached the server's framing buffer.
                await wait_until(
                    lambda: any(c._buffer == b"Button rel" for c in server.factory.connections),
                    reactor,
                )
            finally:
                reset_socket(sock)
            await wait_until(lambda: not server.factory.connections, reactor)
        if role == "collect":
            await wait_until(lambda: len(server.stored()) >= 5, reactor)
            fresh = await server.assert_healthy()
            assert server.stored() == ["Button pressed"] * 5 + [fresh]
        else:
            await server.assert_healthy()


def buffered_bytes(transport) -> int:
    """The bytes a Twisted TCP transport holds that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


@pytest_twisted.ensureDeferred
async def test_serve_client_that_never_reads(reactor, tmp_path):
    """A client flooding 'go' without reading is paused: its sends block, memory is bounded."""
    limits = ServerLimits()
    command = b"go\0"
    reply = b"Button released\0"
    read_chunk = 65536  # what Twisted reads at once
    commands_per_chunk = read_chunk // len(command) + 1
    max_replies = limits.max_pending + commands_per_chunk
    # The transport's 64 KiB threshold, then one chunk's worth of replies on top.
    max_buffered = 65536 + 2 * max_replies * len(reply)
    async with running("serve", reactor, tmp_path, limits) as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        try:
            await wait_until(lambda: len(server.factory.connections) == 1, reactor)
            (protocol,) = server.factory.connections
            server_transport = protocol.transport
            burst = command * 1000
            sent = 0
            blocked_turns = 0  # consecutive looks at a full send buffer and a paused server
            most_buffered = most_pending = 0
            deadline = reactor.seconds() + 30
            while blocked_turns < 20:
                assert reactor.seconds() < deadline, "the server never stopped reading"
                assert sent < 64 * 1024 * 1024, "64 MiB accepted: the server never stopped reading"
                try:
                    sent += sock.send(burst)
                    blocked_turns = 0
                    pause = 0
                except BlockingIOError:
                    paused = server_transport not in reactor.getReaders()
                    blocked_turns = blocked_turns + 1 if paused else 0
                    pause = 0.005
                await deferLater(reactor, pause, lambda: None)
                most_buffered = max(most_buffered, buffered_bytes(server_transport))
                most_pending = max(most_pending, len(protocol._replies or ()))
                assert most_buffered <= max_buffered
                assert most_pending <= max_replies
            # Sending hits EAGAIN and stays there: the server stopped reading this client.
            with pytest.raises(BlockingIOError):
                sock.send(burst)
            assert server_transport not in reactor.getReaders()
            # Everyone else is still served meanwhile.
            await server.assert_healthy()
            assert protocol in server.factory.connections
        finally:
            sock.close()
