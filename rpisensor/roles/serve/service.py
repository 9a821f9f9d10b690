"""
The whole C{serve} role: its factory, and the service that listens, reads
and stops in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.application.service import IService, Service
from twisted.logger import Logger

from rpisensor import wire
from rpisensor.stopping import DrainService, StopInOrder
from rpisensor.net.admission import AdmittingFactory
from rpisensor.net.limits import ListenSettings
from rpisensor.net.listening import ListenerService
from rpisensor.net.peers import is_loopback
from rpisensor.control.controller import OutputController
from rpisensor.control.gate import ControlGate
from rpisensor.net.access import ControlGrants
from rpisensor.roles.serve.commands import READ_COMMANDS, STREAM_COMMANDS
from rpisensor.roles.serve.control import CONTROL_COMMANDS, DEFAULT_CONTROL_RATE, OUTPUTS_COMMAND, OutputsService
from rpisensor.roles.serve.control import refusal as control_refusal
from rpisensor.roles.serve.connection import SensorServerProtocol
from rpisensor.roles.serve.pins import PINS_COMMAND
from rpisensor.roles.serve.registry import Command, CommandRegistry, Permission
from rpisensor.roles.serve.simulate import SIMULATE_COMMANDS
from rpisensor.sensing.reader import InputReader
from rpisensor.sensing.sample import Sample, InputLevel
from rpisensor.stream.state import InputState

if TYPE_CHECKING:
    from rpisensor.roles.serve.publishing import PublishingService

_log = Logger(namespace="rpisensor.roles.serve")


def default_commands(outputs: bool = False) -> CommandRegistry:
    """
    A registry with every command C{serve} knows; the control commands only
    when it has C{outputs} (without, they are unknown commands).
    """
    commands = [*READ_COMMANDS, PINS_COMMAND, *STREAM_COMMANDS, *SIMULATE_COMMANDS]
    if outputs:
        commands += [OUTPUTS_COMMAND, *CONTROL_COMMANDS]
    return CommandRegistry(commands)


class SensorServerFactory(AdmittingFactory):
    """
    Builds L{SensorServerProtocol}s answering from C{reader}.

    @param settings: limits and access policy (its endpoints are not used here).
    @param commands: what clients may send; by default every command of C{serve}.
    @param publishing: the journal and its subscribers; without it, C{hello},
        C{subscribe} and C{status} answer that this server keeps no journal.
    @param state: the inputs whose level is known without a read (edge
        events); C{go} and C{read} answer those at once.
    @param controller: the outputs clients may drive (C{--output}); without
        it, the control commands are unknown.
    @param grants: who may drive them (by default, clients on this machine).
    @param control_rate: control commands one connection may send per second.
    """

    protocol = SensorServerProtocol

    def __init__(
        self,
        reader: InputReader,
        settings: ListenSettings = ListenSettings(),
        commands: CommandRegistry | None = None,
        publishing: PublishingService | None = None,
        state: InputState | None = None,
        controller: OutputController | None = None,
        grants: ControlGrants | None = None,
        control_rate: float = DEFAULT_CONTROL_RATE,
    ) -> None:
        super().__init__(settings.limits, settings.policy, reader.clock)
        self.reader = reader
        self.publishing = publishing
        self.state = state
        self.controller = controller
        self.grants = grants if grants is not None else ControlGrants()
        #: The rate limit and the log of every control command, the page's switches' too.
        self.gate = ControlGate(reader.clock, control_rate)
        self.control_log = self.gate.log
        self.commands = commands if commands is not None else default_commands(controller is not None)
        # The wire form of every reply a reading can give, encoded once: the hot path sends these.
        self._frames = {
            (spec.name, high): wire.frame(spec.text_for(high))
            for spec in reader.inputs.values()
            for high in (False, True)
        }

    def logPrefix(self) -> str:
        return "rpisensor serve"

    def frame_for(self, reading: Sample) -> bytes:
        """A reading's text as one message on the wire, NUL included (an input's, encoded once)."""
        if isinstance(reading, InputLevel):
            return self._frames[reading.input.name, reading.high]
        return wire.frame(reading.text)

    def permissions_for(self, transport) -> frozenset[Permission]:
        """What the client on C{transport} may do."""
        granted = {Permission.READ}
        if self.reader.backend.name == "sim" and is_loopback(transport):
            granted.add(Permission.SIMULATE)
        if self.controller is not None and self.grants.grants(transport):
            granted.add(Permission.CONTROL)
        return frozenset(granted)

    def refusal(self, connection, command: Command) -> str:
        """The reply to C{command} from a client without its permission."""
        if command.permission is Permission.CONTROL:
            return control_refusal(connection, command.name)
        return command.refusal or f"error: {command.name} is not allowed for this client"

    def flush_logs(self) -> None:
        super().flush_logs()
        self.control_log.flush()


class ServerService(StopInOrder):
    """
    The whole server: the reader's pool and channels, the journal and what
    records into it, and one listener per endpoint. It stops in order: the
    listeners, then the replies in flight and the subscribers, then the
    sampling and the journal, then the pool and the channels.

    @ivar factory: the L{SensorServerFactory} every listener uses.
    """

    def __init__(self, factory: SensorServerFactory) -> None:
        super().__init__()
        self.factory = factory


def build_server_service(
    reactor,
    reader: InputReader,
    reader_service: Service,
    settings: ListenSettings = ListenSettings(),
    extra: Sequence[IService] = (),
    publishing: PublishingService | None = None,
    controller: OutputController | None = None,
    grants: ControlGrants | None = None,
    control_rate: float = DEFAULT_CONTROL_RATE,
    exact_levels: bool = True,
) -> ServerService:
    """
    Assemble C{serve} from an opened reader and its pool service.

    @param extra: services that run between the pool and the listeners (a
        demo pattern): started after the pool, stopped before it.
    @param publishing: the journal and its subscribers (see
        L{rpisensor.roles.serve.publishing}); it opens the journal when it
        starts, after the pool and before anything is served.
    @param controller: the outputs, set up already (L{open_outputs}); they
        get their safe levels and their pins return to input when the
        service stops, after the connections and before the journal and the pool.
    @param exact_levels: whether the publishing side's L{InputState} knows
        the levels as they are (edge events), so that C{go} and C{read}
        answer from it; not for polled levels, which may be an interval old:
        then C{go} reads the pin.
    """
    state = publishing.state if publishing is not None else InputState.for_reader(reader, reactor)
    factory = SensorServerFactory(
        reader, settings, publishing=publishing, state=state if exact_levels else None,
        controller=controller, grants=grants, control_rate=control_rate,
    )  # fmt: skip
    top = ServerService(factory)
    reader_service.setServiceParent(top)
    if state is not None:
        state.setServiceParent(top)
    if publishing is not None:
        publishing.setServiceParent(top)
    if controller is not None:
        journal = publishing.journal if publishing is not None else None
        OutputsService(controller, journal, numbering=reader.backend.numbering).setServiceParent(top)
    for service in extra:
        service.setServiceParent(top)
    DrainService(factory, reactor, reader.longest_timeout + 1).setServiceParent(top)
    for description in settings.endpoints:
        ListenerService(reactor, description, factory, settings.client_ca).setServiceParent(top)
    return top


def make_service(options, reactor) -> ServerService:
    """C{serve} as its options say."""
    from rpisensor.roles._inputs import open_inputs
    from rpisensor.roles.serve.publishing import open_publishing
    from rpisensor.sensing.patterns import PatternService
    from rpisensor.stream.identity import default_device_id

    reader, pool = open_inputs(options, reactor)
    extra = []
    if options["sim-patterns"]:
        if reader.backend.name != "sim":
            raise SystemExit("rpisensor: --sim-pattern needs simulated pins, but real pins are in use")
        extra.append(PatternService(reactor, reader.backend, reader.inputs, options["sim-patterns"]))
    journal = options.journal_settings()
    settings = options.publish_settings(journal.device or default_device_id())
    edges = InputState.for_reader(reader, reactor)
    state = edges if edges is not None else polled_state(reactor, reader, settings.poll_interval)
    publishing = open_publishing(
        reactor, reader, journal.path, settings, journal.max_entries, journal.max_bytes, journal.sync, state,
    )  # fmt: skip
    controller = open_outputs(reactor, reader, pool, options["outputs"], options["max-ttl"])
    listen = options.listen_settings()
    top = build_server_service(
        reactor, reader, pool, listen, extra, publishing, controller,
        options.control_grants(), options["control-rate"], exact_levels=edges is not None,
    )  # fmt: skip
    if options["web"]:
        from rpisensor.web.roles import serve_web

        serve_web(reactor, options.web_settings(), listen, top, reader, publishing).setServiceParent(top)
    return top


def polled_state(reactor, reader: InputReader, interval: float) -> InputState | None:
    """
    The inputs' levels from a polling thread (L{PolledEdges}) if the backend's
    reads are cheap register reads (RPi.GPIO); else C{None}, and the sampler
    polls them through the read pool. The first pass reads every input now:
    call it at start-up, before the reactor runs. Stops the program with one
    line saying why if an input cannot be read.
    """
    from rpisensor.hw import GPIOError
    from rpisensor.sensing.polling import PolledEdges, polls_cheaply

    if not polls_cheaply(reader.backend):
        return None
    try:
        edges = PolledEdges(reader.backend, reader.inputs.values(), interval, wall=reader.wall)
    except GPIOError as e:
        raise SystemExit(f"rpisensor: cannot read the inputs: {e}") from None
    return InputState(reactor, edges, reader.inputs.values(), reader.wall)


def open_outputs(reactor, reader: InputReader, pool, outputs, max_ttl: float) -> OutputController | None:
    """
    The outputs on C{reader}'s backend, each set up now at its safe level
    (blocking, before the reactor runs, as the inputs are), their writes
    through the reader's pool; C{None} without outputs. Stops the program
    with one line saying why if the pins cannot be outputs.
    """
    if not outputs:
        return None
    from rpisensor.hw import GPIOError
    from rpisensor.hw.interfaces import IOutputBackend

    backend = reader.backend
    if not IOutputBackend.providedBy(backend):
        raise SystemExit(f"rpisensor: the {backend.name} GPIO backend cannot drive outputs")
    controller = OutputController(backend, outputs, pool.runner, reactor, max_ttl)
    try:
        controller.setup()
    except GPIOError as e:
        raise SystemExit(f"rpisensor: cannot set up the outputs: {e}") from None
    return controller
