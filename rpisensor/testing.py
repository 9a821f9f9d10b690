"""
Helpers for tests, ours and yours: simulated pins you can drive, runners that
make thread-pool reads deterministic, a server on loopback and a one-shot
client.

    from rpisensor.testing import start_server, send_message

    async def test_button():
        server = await start_server()
        server.pin("button").drive_low()
        assert await send_message(server.port, "go") == "Button pressed"
        await server.stop()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater

from rpisensor.client import RequestProtocol
from rpisensor.gpio.simulated import SimulatedGPIO, SimulatedPin
from rpisensor.inputs import DEFAULT_INPUT, InputSpec
from rpisensor.reader import InputReader, ReaderService, open_reader
from rpisensor.server import SensorServerFactory


def simulated_pins(numbering: str = "board", latency: float = 0.0, clock=None) -> SimulatedGPIO:
    """Simulated pins with no latency: drive them with C{.pin(24).drive_low()}."""
    return SimulatedGPIO(numbering=numbering, latency=latency, clock=clock)


def inline_runner(f, *args) -> Deferred:
    """A runner that calls C{f} at once, in the calling thread."""
    return maybeDeferred(f, *args)


@dataclass
class Job:
    """One call handed to a L{FakeRunner}, and the Deferred its caller holds."""

    f: object
    args: tuple
    deferred: Deferred = field(default_factory=Deferred)

    def run(self) -> None:
        """Run the call now, in this thread, and fire the caller's Deferred."""
        maybeDeferred(self.f, *self.args).chainDeferred(self.deferred)


class FakeRunner:
    """
    A runner that records each job and lets the test decide when it finishes:
    C{runner.jobs[0].run()}, or fire C{runner.jobs[0].deferred} by hand.
    """

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def __call__(self, f, *args) -> Deferred:
        job = Job(f, args)
        self.jobs.append(job)
        return job.deferred

    def run_all(self) -> None:
        """Run every job recorded so far, oldest first, and forget them."""
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job.run()


@dataclass
class RunningServer:
    """A sensor server listening on loopback, from L{start_server}."""

    port: int
    listening: IListeningPort
    backend: SimulatedGPIO
    reader: InputReader
    factory: SensorServerFactory
    reader_service: ReaderService

    def pin(self, name: str) -> SimulatedPin:
        """The simulated pin behind input C{name}."""
        return self.backend.pin(self.reader.inputs[name].pin)

    @property
    def endpoint(self) -> str:
        """A client endpoint description that reaches this server."""
        return f"tcp:host=127.0.0.1:port={self.port}"

    def stop(self) -> Deferred:
        """Stop listening, drop the clients and wait until they are gone, stop the read pool."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await maybeDeferred(self.listening.stopListening)
        await self.factory.drain(self.reader.clock, timeout=0)
        await wait_until(lambda: not self.factory.connections, self.reader.clock)
        if self.reader_service.running:
            await self.reader_service.stopService()


def start_server(
    inputs: Sequence[InputSpec] = (DEFAULT_INPUT,),
    backend: SimulatedGPIO | None = None,
    reactor=None,
    port: int = 0,
    **factory_options,
) -> Deferred[RunningServer]:
    """
    Start a sensor server on 127.0.0.1 (a free port unless C{port} is given),
    reading through a real one-thread pool as in production. C{factory_options}
    (C{limits}, C{policy}) go to L{SensorServerFactory}.
    """
    if reactor is None:
        from twisted.internet import reactor
    if backend is None:
        backend = simulated_pins(clock=reactor)
    reader, reader_service = open_reader(reactor, backend, list(inputs))
    reader_service.startService()
    factory = SensorServerFactory(reader, **factory_options)
    listening = reactor.listenTCP(port, factory, interface="127.0.0.1")
    server = RunningServer(
        listening.getHost().port, listening, backend, reader, factory, reader_service
    )
    return succeed(server)


def connect(port: int, reactor=None, host: str = "127.0.0.1") -> Deferred[RequestProtocol]:
    """Connect a L{RequestProtocol} to C{host:port}; then C{client.request("go")}."""
    if reactor is None:
        from twisted.internet import reactor
    return connectProtocol(TCP4ClientEndpoint(reactor, host, port), RequestProtocol())


def send_message(
    port: int, text: str, reactor=None, timeout: float = 10.0, host: str = "127.0.0.1"
) -> Deferred[str]:
    """Connect, send C{text}, and fire with the first reply; the connection is closed."""
    if reactor is None:
        from twisted.internet import reactor

    async def exchange() -> str:
        client = await connect(port, reactor, host)
        try:
            return await client.request(text).addTimeout(timeout, reactor)
        finally:
            client.transport.loseConnection()

    return Deferred.fromCoroutine(exchange())


async def wait_until(predicate, reactor=None, timeout: float = 30.0, interval: float = 0.01) -> None:
    """
    Wait, without blocking the reactor, until C{predicate()} is true.

    @raise TimeoutError: still false after C{timeout} seconds (a generous
        deadline for loaded machines, not a measurement).
    """
    if reactor is None:
        from twisted.internet import reactor
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise TimeoutError(f"condition still false after {timeout} s: {predicate!r}")
        await deferLater(reactor, interval, lambda: None)


def listening_port(service) -> Deferred:
    """
    Fires with the port of the first listener in C{service} (a service built by
    C{build_server_service} or C{build_collect_service}) once it listens; give
    such a service C{tcp:0:interface=127.0.0.1} to get a free port.
    """
    from rpisensor.listening import ListenerService

    listener = next(child for child in service if isinstance(child, ListenerService))
    return listener.when_listening()


def stored_messages(path) -> list[str]:
    """The messages in a collector's store file, oldest first (JSON Lines or SQLite)."""
    import json
    import sqlite3
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return []
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # whole lines only
        return [json.loads(line)["message"] for line in lines]
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT message FROM readings ORDER BY id")]
