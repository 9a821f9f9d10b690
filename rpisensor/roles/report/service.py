"""
The whole reporter as one service: the read pool, the outbox, the sampling,
the connection kept open to the collector (or several, tried in turn), and
the status listener; built from a L{ReportSettings}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.application.service import Service

from rpisensor.stopping import StopInOrder
from rpisensor.entries import Reading
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT, reconnecting_client
from rpisensor.roles.report.connection import ReportFactory
from rpisensor.roles.report.outbox import OutboxService
from rpisensor.roles.report.reporter import DEFAULT_WINDOW, Reporter, ReporterService, StreamSettings
from rpisensor.sensing.reader import InputReader
from rpisensor.stream.heartbeat import interval_for
from rpisensor.stream.identity import ClockState
from rpisensor.stream.journal import Journal
from rpisensor.stream.state import InputState


@dataclass(frozen=True)
class OutboxSettings:
    """
    Where and how the outbox keeps the readings (C{--outbox}, C{--outbox-max},
    C{--outbox-sync}, C{--outbox-keep}).

    @ivar path: the SQLite file; C{None}: in memory only (a restart loses it).
    @ivar max_entries: the most entries kept (C{None}: bounded by C{max_bytes}).
    @ivar max_bytes: the most bytes on disk instead.
    @ivar keep: seconds an acknowledged reading stays, to refill a collector restored from a backup.
    """

    path: str | None = None
    max_entries: int | None = 1_000_000
    max_bytes: int | None = None
    sync: str = "batch"
    keep: float = 0.0


@dataclass(frozen=True)
class ReportSettings:
    """
    What C{report} does; each has an option of the same name.

    @ivar connect: the collectors (client endpoints), tried in turn; none: no
        connection (C{report --mqtt} adds its own way out, L{rpisensor.mqtt}).
    @ivar interval: seconds between samples of the inputs.
    @ivar on_change: record (and send) only changes.
    @ivar heartbeat: plain text with C{on_change}: seconds between full-state messages.
    @ivar max_retry_delay: the longest wait between reconnection attempts.
    @ivar dead_peer_timeout: seconds without an answer before the link counts
        as dead (the stream's heartbeat is a third of it); 0: never.
    @ivar device: this Pi's id; C{None}: the host's default (L{default_device_id}).
    @ivar protocol, hello_timeout, window: see L{StreamSettings}.
    @ivar status_listen: a server endpoint answering C{status}, or C{None}.
    """

    connect: tuple[str, ...]
    interval: float = 2.0
    on_change: bool = False
    heartbeat: float = 60.0
    max_retry_delay: float = 60.0
    dead_peer_timeout: float = DEFAULT_DEAD_PEER_TIMEOUT
    device: str | None = None
    protocol: str = "auto"
    hello_timeout: float = 3.0
    window: int = DEFAULT_WINDOW
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    status_listen: str | None = None

    def stream(self) -> StreamSettings:
        from rpisensor.stream.identity import default_device_id

        heartbeat = interval_for(self.dead_peer_timeout) if self.dead_peer_timeout > 0 else None
        return StreamSettings(
            self.device or default_device_id(), self.protocol, self.hello_timeout, heartbeat, self.window
        )


class ReportService(StopInOrder):
    """
    The whole reporter; stops the sampling (waiting for the reads in flight),
    then the connection, then the status listener, the outbox (everything
    appended committed, the last commits synced) and the reads.

    @ivar reporter: the L{Reporter}.
    @ivar client: the service keeping the connection open.
    @ivar outbox: the L{OutboxService}.
    """

    def __init__(self, reporter: Reporter, client: Service | None, outbox: OutboxService) -> None:
        super().__init__()
        self.reporter = reporter
        self.client = client
        self.outbox = outbox


def build_report_service(
    reactor,
    reader: InputReader,
    reader_service: Service,
    settings: ReportSettings,
    *,
    journal: Journal | None = None,
    on_reading: Callable[[Reading], object] | None = None,
    on_ack: Callable[[int], object] | None = None,
    clock_state: ClockState | None = None,
) -> ReportService:
    """
    The whole reporter: the read pool (C{reader_service}), the outbox, the
    sampling, and a connection to the collector kept open for as long as the
    service runs.

    @param journal: the outbox's L{Journal}; by default one as C{settings.outbox} says.
    @param on_reading: called with each reading once it is in the outbox.
    @param on_ack: called with each cumulative acknowledgement of the collector.
    """
    box = settings.outbox
    if journal is None:
        journal = Journal(box.path, max_entries=box.max_entries or 1_000_000, sync=box.sync)
    outbox = OutboxService(reactor, journal, max_bytes=box.max_bytes, keep=box.keep)
    state = InputState.for_reader(reader, reactor) if settings.on_change else None
    reporter = Reporter(
        reader, reactor, outbox, settings.stream(), settings.interval, settings.on_change, settings.heartbeat,
        clock_state, state,
    )  # fmt: skip
    reporter.add_listeners(on_reading, on_ack)
    client = None
    if settings.connect:
        client = reconnecting_client(
            reactor, settings.connect, ReportFactory(reporter), settings.max_retry_delay,
            dead_peer_timeout=settings.dead_peer_timeout,
        )  # fmt: skip
    # Started in this order, stopped last added first: the sampling (which
    # stops sending), the connection, the status listener, the outbox, the reads.
    top = ReportService(reporter, client, outbox)
    reader_service.setServiceParent(top)
    outbox.setServiceParent(top)
    if state is not None:
        state.setServiceParent(top)
    if settings.status_listen is not None:
        from rpisensor.roles.report.status import status_service

        status_service(reactor, settings.status_listen, reporter).setServiceParent(top)
    if client is not None:
        client.setServiceParent(top)
    ReporterService(reporter).setServiceParent(top)
    return top


def make_service(options, reactor) -> ReportService:
    """C{report} as its options say."""
    from rpisensor.roles._inputs import open_inputs

    journal = options.journal_settings()
    if options.unusable_cn is not None:
        Reporter._log.warn(
            "The client certificate's CN {cn!r} cannot be a device id (1 to 64 letters, digits, "
            "'.', '_', ':' or '-'): using {device!r}. A collector with --client-ca refuses a device "
            "that is not its certificate's CN: give the certificate a CN such as pi-kitchen, or "
            "give --device.",
            cn=options.unusable_cn, device=options.device_id(),
        )  # fmt: skip
    if options.status_problem is not None:
        Reporter._log.warn("{problem}.", problem=options.status_problem)
    settings = ReportSettings(
        connect=tuple(options["connect"]), interval=options["interval"], on_change=options["on-change"],
        heartbeat=options["heartbeat"], max_retry_delay=options["max-delay"],
        dead_peer_timeout=options["dead-peer-timeout"], device=options.device_id(), protocol=options["protocol"],
        hello_timeout=options["hello-timeout"], window=journal.window,
        outbox=OutboxSettings(
            None if journal.path is None else str(journal.path),
            journal.max_entries if journal.max_entries is not None else 1_000_000,
            journal.max_bytes, journal.sync, options["outbox-keep"],
        ),
        status_listen=options["status-listen"],
    )  # fmt: skip
    reader, pool = open_inputs(options, reactor)
    service = build_report_service(reactor, reader, pool, settings)
    if options["mqtt"]:  # the outbox goes to an MQTT broker instead (rpisensor.mqtt)
        from rpisensor.roles.report.mqtt import attach_mqtt

        attach_mqtt(service, options, reactor, reader, pool)
    if options["sim-patterns"]:
        from rpisensor.sensing.patterns import PatternService

        if reader.backend.name != "sim":
            raise SystemExit("rpisensor: --sim-pattern needs simulated pins, but real pins are in use")
        PatternService(reactor, reader.backend, reader.inputs, options["sim-patterns"]).setServiceParent(service)
    return service
