"""
Scaffolding the tests share: constants, raw clients, harnesses of a
protocol on a StringTransport with a Clock and a FakeRunner, and readers of
a collector's store. Processes (twistd) are in L{tests.processes}.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
from contextlib import closing
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import CollectorFactory
from rpisensor.roles.serve.service import SensorServerFactory
from rpisensor.sensing.inputs import DEFAULT_INPUT, InputSpec
from rpisensor.sensing.reader import InputReader
from rpisensor.store import JsonLinesFile, StoreService
from rpisensor.testing import FakeRunner, simulated_pins

#: A server endpoint on a free loopback port.
LOOPBACK = "tcp:0:interface=127.0.0.1"
#: A second input, active high, for tests that need two.
DOOR = InputSpec("door", 18, pull="down", active_low=False, active_text="open", inactive_text="closed")


# -- raw clients over real TCP ---------------------------------------------------


class RawClient(Protocol):
    """A client that writes whatever the test says and keeps every byte it gets."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.lost: Deferred[None] = Deferred()
        self.reason = None

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.lost.callback(None)

    @property
    def received(self) -> bytes:
        return b"".join(self._chunks)

    def replies(self) -> list[str]:
        """The whole messages received so far, as text."""
        return [body.decode("utf-8") for body in self.received.split(b"\0")[:-1]]

    @property
    def closed(self) -> bool:
        return self.lost.called


def open_client(reactor, port: int) -> Deferred[RawClient]:
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())


async def close(client: RawClient) -> None:
    if not client.closed:
        client.transport.loseConnection()
    await client.lost


def reset_socket(sock: socket.socket) -> None:
    """Close C{sock} with an RST instead of a FIN (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- harnesses: one protocol on a StringTransport, time and reads by hand ---------


class ServerHarness:
    """A server protocol on a StringTransport, with reads the test completes."""

    def __init__(self, inputs=(DEFAULT_INPUT, DOOR), **factory_options):
        self.clock = Clock()
        self.backend = simulated_pins(clock=self.clock)
        self.runner = FakeRunner()
        self.reader = InputReader(self.backend, list(inputs), self.runner, self.clock, wall=self.clock.seconds)
        self.reader.setup()
        self.factory = SensorServerFactory(self.reader, ListenSettings(**factory_options))

    def connect(self, peer: str = "192.168.1.1"):
        """A connection from C{peer} (a LAN address by default, loopback with C{"127.0.0.1"})."""
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 54321))
        protocol.makeConnection(transport)
        return protocol, transport

    def finish_reads(self):
        self.clock.advance(0)
        self.runner.run_all()


def replies(transport: StringTransport) -> list[bytes]:
    """The whole messages written to C{transport} since the last call; clears it."""
    data = transport.value()
    transport.clear()
    return data.split(b"\0")[:-1]


class CollectorHarness:
    def __init__(self, test, store=True, **options):
        self.clock = Clock()
        self.clock.advance(1764075600.25)  # 2025-11-25T13:00:00.250Z
        self.runner = FakeRunner()
        self.path = test.mktemp() + ".jsonl"
        self.store = None
        if store:
            file = JsonLinesFile(self.path)
            self.store = StoreService(self.clock, file, runner=self.runner)
            self.store.startService()
        self.factory = CollectorFactory(self.store, self.clock, ListenSettings(**options), wall=self.clock.seconds)

    def connect(self, port=40000):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.0.17", port))
        protocol.makeConnection(transport)
        return protocol, transport

    def write(self):
        self.clock.advance(0)
        self.runner.run_all()


# -- a collector's store ------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict]:
    """The complete lines of a JSON Lines store so far, decoded; [] if it does not exist yet."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def read_sqlite(path: str | Path) -> list[dict]:
    """
    Every row of an SQLite store's C{readings} table, in insertion order; [] while
    there is none yet (a collector creates the file a moment before its tables).
    """
    if not Path(path).exists():
        return []
    with closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute("SELECT time, peer, message FROM readings ORDER BY id").fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise
    return [{"time": time, "peer": peer, "message": message} for time, peer, message in rows]


def read_store(path: str | Path) -> list[dict]:
    """The records of a C{.jsonl} or C{.sqlite} store."""
    return read_jsonl(path) if Path(path).suffix == ".jsonl" else read_sqlite(path)
