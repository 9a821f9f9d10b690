"""
A sensor server on loopback, and clients for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from rpisensor.control.outputs import OutputSpec
from rpisensor.hw.simulated import SimulatedGPIO, SimulatedPin
from rpisensor.net.access import AccessPolicy
from rpisensor.net.limits import ListenSettings, ServerLimits
from rpisensor.net.request import RequestProtocol
from rpisensor.roles.serve.service import SensorServerFactory, ServerService, build_server_service, open_outputs
from rpisensor.sensing.inputs import DEFAULT_INPUT, InputSpec
from rpisensor.sensing.measure import MeasurementSpec
from rpisensor.sensing.pool import open_reader
from rpisensor.sensing.reader import InputReader
from rpisensor.testing._files import listening_port
from rpisensor.testing._pins import simulated_pins


@dataclass
class RunningServer:
    """A sensor server listening on loopback, from L{start_server}."""

    port: int
    service: ServerService
    backend: SimulatedGPIO
    reader: InputReader

    @property
    def factory(self) -> SensorServerFactory:
        return self.service.factory

    def pin(self, name: str) -> SimulatedPin:
        """The simulated pin behind input C{name}."""
        return self.backend.pin(self.reader.inputs[name].pin)

    def output(self, name: str) -> bool:
        """Whether output C{name}'s pin is driven high now."""
        controller = self.factory.controller
        spec = next(spec for spec in controller.specs if spec.name == name)
        return self.backend.level(spec.pin)

    @property
    def endpoint(self) -> str:
        """A client endpoint description that reaches this server."""
        return f"tcp:host=127.0.0.1:port={self.port}"

    def stop(self) -> Deferred:
        """
        Stop as C{serve} stops on SIGTERM: stop listening, answer what the
        clients asked, close them, stop the read pool and release the pins.
        """
        return self.service.stopService()


def start_server(
    inputs: Sequence[InputSpec] = (DEFAULT_INPUT,),
    backend: SimulatedGPIO | None = None,
    reactor=None,
    port: int = 0,
    limits: ServerLimits = ServerLimits(),
    policy: AccessPolicy | None = None,
    sensors: Sequence[MeasurementSpec] = (),
    outputs: Sequence[OutputSpec] = (),
) -> Deferred[RunningServer]:
    """
    Start C{serve} on 127.0.0.1 (a free port unless C{port} is given), built
    as in production (L{build_server_service}: a real one-thread read pool,
    the same stop order), on simulated pins unless C{backend} is given, with
    the measurement C{sensors} (see L{FakeSysfs} and L{parse_sensor}) and the
    C{outputs} (clients on loopback may drive them, as by default).
    """
    if reactor is None:
        from twisted.internet import reactor
    if backend is None:
        backend = simulated_pins(clock=reactor)
    reader, pool = open_reader(reactor, backend, list(inputs), sensors=list(sensors))
    controller = open_outputs(reactor, reader, pool, list(outputs), max_ttl=60.0)
    settings = ListenSettings(
        (f"tcp:{port}:interface=127.0.0.1",), limits, policy if policy is not None else AccessPolicy()
    )
    service = build_server_service(reactor, reader, pool, settings, controller=controller)
    service.startService()

    async def started() -> RunningServer:
        listening = await listening_port(service)
        return RunningServer(listening.getHost().port, service, backend, reader)

    return Deferred.fromCoroutine(started())


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
