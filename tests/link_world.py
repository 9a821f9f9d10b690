"""
A small world for the stream link's tests: Pis (a real L{Reporter} with its
outbox in an SQLite file) and collectors (a real L{CollectorFactory} over an
SQLite store) joined by L{twisted.test.iosim} connections, all on one Clock,
every file in the test's directory, every thread an inline runner.

What happens to a real fleet can be done to it: cut a link anywhere, let an
answer come late, restart either side, restore a Pi's SD card (its outbox
file) or the collector's store from an earlier copy, clone a Pi (its outbox
copied to another), and have a stranger say hello with someone else's stream.
Each reading a Pi takes has a text of its own, so the store can be read for
"every reading once".
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim

from rpisensor.entries import Reading
from rpisensor.net.framing import NullTerminatedProtocol
from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import CollectorFactory
from rpisensor.roles.report.connection import ReportFactory
from rpisensor.roles.report.outbox import OutboxService
from rpisensor.roles.report.reporter import Reporter, StreamSettings
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.reader import InputReader
from rpisensor.store import StoreService
from rpisensor.store.sqlite import SQLiteFile
from rpisensor.stream.journal import Journal
from rpisensor.testing import inline_runner, simulated_pins
from rpisensor.wire import v2

#: 2026-12-01T19:33:25Z: readings are stamped from here on.
START = 1796153605.0
HELLO_TIMEOUT = 3.0

_texts = itertools.count(1)


class Synced:
    def synced(self) -> bool:
        return True


class Link:
    """One connection between a Pi and the collector, on iosim's fake transports."""

    def __init__(self, world: World, client, host: str) -> None:
        self.world = world
        server = world.collector.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        self.client, self.server = client, server
        self.client_io = iosim.FakeTransport(client, False, peerAddress=IPv4Address("TCP", "127.0.0.1", 22000))
        self.server_io = iosim.FakeTransport(server, True, peerAddress=IPv4Address("TCP", host, 40000))
        self.pump = iosim.connect(server, self.server_io, client, self.client_io, greet=False, clock=world.clock)
        self.closed = False

    def flush(self, rounds: int = 1000) -> None:
        """Move bytes both ways until nothing moves (and both ends saw a close, if there was one)."""
        for _ in range(rounds):
            if self.closed or not self.pump.pump():
                break
        if self.server_io.disconnected and self.client_io.disconnected:
            self.closed = True

    def cut(self) -> None:
        """The link drops: what is in flight is lost, both ends hear it."""
        if self.closed:
            return
        self.closed = True
        self.client_io.getOutBuffer()
        self.server_io.getOutBuffer()
        for io in (self.client_io, self.server_io):
            if not io.disconnected:
                io.disconnected = True
                io.protocol.connectionLost(Failure(ConnectionLost()))


class Pi:
    """A reporter on its own outbox file, sampling nothing by itself: the test takes readings."""

    def __init__(self, world: World, name: str, path: Path, keep: float = 0.0, protocol: str = "auto") -> None:
        self.world = world
        self.name = name
        self.path = path
        self.keep = keep
        self.protocol = protocol
        self.link: Link | None = None
        #: Every text this Pi took, and those it took since its outbox was last copied in.
        self.taken: list[str] = []
        self.open()

    def open(self) -> None:
        clock = self.world.clock
        self.outbox = OutboxService(clock, Journal(self.path, current_boot="boot"), runner=inline_runner,
                                    keep=self.keep, wall=clock.seconds)  # fmt: skip
        self.outbox.startService()
        pins = simulated_pins(clock=clock)
        reader = InputReader(pins, [DEFAULT_INPUT], inline_runner, clock, wall=clock.seconds)
        stream = StreamSettings(self.name, self.protocol, HELLO_TIMEOUT, 10.0, 8)
        self.reporter = Reporter(reader, clock, self.outbox, stream, clock_state=Synced())

    def close(self) -> None:
        self.disconnect()
        self.outbox.stopService()

    def take(self, count: int = 1) -> None:
        """Take C{count} readings, each with a text of its own."""
        for _ in range(count):
            text = f"{self.name} reading {next(_texts)}"
            self.taken.append(text)
            self.outbox.append(Reading(ts=v2.format_timestamp(self.world.clock.seconds()), synced=True,
                                       sensor="button", value=len(self.taken) % 2, text=text))  # fmt: skip
        self.world.clock.advance(0)

    def connect(self) -> Link:
        self.disconnect()
        client = ReportFactory(self.reporter).buildProtocol(None)
        self.link = Link(self.world, client, self.world.host_of(self))
        return self.link

    def disconnect(self) -> None:
        if self.link is not None:
            self.link.cut()
            self.link = None

    def settle(self) -> bool:
        """Connect (again, whenever the link ended) and deliver until the collector acknowledged everything."""
        for _ in range(30):
            if self.link is None or self.link.closed:
                self.connect()
            self.link.flush()
            self.world.clock.advance(1.0)
            self.link.flush()
            if self.link.client.mode == "2" and self.outbox.acked >= self.outbox.journal.last:
                return True
        return False

    def stream(self) -> str:
        return self.outbox.journal.stream


class Collector:
    """C{collect} on an SQLite store."""

    def __init__(self, world: World, path: Path) -> None:
        self.world = world
        self.path = path
        self.open()

    def open(self) -> None:
        clock = self.world.clock
        self.store = StoreService(clock, SQLiteFile(self.path), runner=inline_runner)
        self.store.startService()
        self.factory = CollectorFactory(self.store, clock, ListenSettings(), wall=clock.seconds)

    def close(self) -> None:
        for pi in self.world.pis:
            pi.disconnect()
        self.store.stopService()

    def texts(self) -> list[str]:
        with closing(sqlite3.connect(self.path)) as db:
            return [row[0] for row in db.execute("SELECT text FROM readings WHERE seq IS NOT NULL")]

    def gaps(self) -> list[tuple[str, str, int, int, str]]:
        with closing(sqlite3.connect(self.path)) as db:
            return list(db.execute("SELECT device, stream, from_seq, to_seq, reason FROM gaps ORDER BY id"))


class Image:
    """An SD card's image: the outbox file as it was, and the texts the Pi had taken by then."""

    def __init__(self, path: Path, taken: list[str]) -> None:
        self.path = path
        self.taken = list(taken)


class World:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.clock = Clock()
        self.clock.advance(START)
        self.pis: list[Pi] = []
        self.collector = Collector(self, self.directory / "store.sqlite")
        self._copies = itertools.count(1)

    def pi(self, name: str, **options) -> Pi:
        pi = Pi(self, name, self.directory / f"{name}.sqlite", **options)
        self.pis.append(pi)
        return pi

    def host_of(self, pi: Pi) -> str:
        return f"192.168.0.{10 + self.pis.index(pi)}"

    def copy(self, path: Path) -> Path:
        """A copy of a closed SQLite file (its WAL checkpointed first)."""
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        target = self.directory / f"copy-{next(self._copies)}-{path.name}"
        shutil.copyfile(path, target)
        return target

    def snapshot_pi(self, pi: Pi) -> Image:
        """The Pi's SD card imaged now (its outbox closed and opened again around the copy)."""
        pi.close()
        image = Image(self.copy(pi.path), pi.taken)
        pi.open()
        return image

    def restore_pi(self, pi: Pi, image: Image) -> None:
        """The Pi's SD card restored from an earlier image: what it took since is gone from it."""
        pi.close()
        shutil.copyfile(image.path, pi.path)
        for suffix in ("-wal", "-shm"):
            Path(str(pi.path) + suffix).unlink(missing_ok=True)
        pi.taken = list(image.taken)
        pi.open()

    def clone(self, pi: Pi, image: Image, name: str) -> Pi:
        """Another Pi made from an image of C{pi}'s card: the same outbox, the same device name."""
        path = self.directory / f"{name}.sqlite"
        shutil.copyfile(image.path, path)
        clone = Pi(self, pi.name, path, keep=pi.keep)
        clone.taken = list(image.taken)  # the image's readings: shared history
        self.pis.append(clone)
        return clone

    def snapshot_collector(self) -> Path:
        self.collector.close()
        copy = self.copy(self.collector.path)
        self.collector.open()
        return copy

    def restore_collector(self, backup: Path) -> None:
        self.collector.close()
        shutil.copyfile(backup, self.collector.path)
        for suffix in ("-wal", "-shm"):
            Path(str(self.collector.path) + suffix).unlink(missing_ok=True)
        self.collector.open()


class Stranger(NullTerminatedProtocol):
    """Someone who names another's stream in its hello, with its own owner secret, and pushes a gap."""

    def __init__(self, device: str, stream: str) -> None:
        self.device, self.stream = device, stream
        self.received: list[str] = []

    def connectionMade(self) -> None:
        super().connectionMade()
        hello = v2.Hello("report", self.device, self.stream, 10.0, last=3, owner="ab" * 16)
        self.sendMessage(v2.encode(hello))
        self.sendMessage(v2.encode(v2.Gap(stream=self.stream, first=1, last=v2.MAX_SEQ, reason="forged")))

    def messageReceived(self, text: str) -> None:
        self.received.append(text)
