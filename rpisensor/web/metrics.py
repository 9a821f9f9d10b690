"""
C{GET /metrics}: the role's counters in Prometheus's text format, written by
C{prometheus_client} (one registry per role's web side, not the library's
global one, so that two roles in one process, or tests, do not share counts).

Errors by kind: every failed read (C{kind="read"}) and every warning or
error line the program logs, by the subsystem that logged it
(C{kind="log:serve"}, C{kind="log:web"}...). Lines a
L{rpisensor.lograte.RateLimitedLog} leaves out are not counted one by one;
its summary line counts once.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.resource import Resource

#: Seconds: from a GPIO read (microseconds) to a slow 1-Wire sensor (about a second).
READ_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_LOGGED = (LogLevel.warn, LogLevel.error, LogLevel.critical)


def _subsystem(namespace: str) -> str:
    """C{rpisensor.roles.serve.connection.X} -> C{serve}; C{rpisensor.sensing.reader.X} -> C{sensing}."""
    parts = namespace.split(".")
    if parts[:1] != ["rpisensor"] or len(parts) < 2:
        return parts[0] or "other"
    if parts[1] == "roles" and len(parts) > 2:
        return parts[2]
    return parts[1]


class Metrics:
    """The metrics of one role's process; gauges are read when scraped."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = registry = CollectorRegistry()
        self.connections = Gauge(
            "rpisensor_connections", "Connections open now on the role's listeners (--listen).",
            registry=registry,
        )  # fmt: skip
        self.web_streams = Gauge(
            "rpisensor_web_event_streams", "Web pages following the live events now.", registry=registry
        )
        self.readings_in = Counter(
            "rpisensor_readings_in",
            "Readings recorded: into the journal (serve), into the store or the view (collect, poll).",
            registry=registry,
        )
        self.readings_out = Counter(
            "rpisensor_readings_out",
            "Readings sent, by where to: web (pages' event streams), subscriber (serve's v2 subscribers).",
            ["to"], registry=registry,
        )  # fmt: skip
        self.outbox_depth = Gauge(
            "rpisensor_outbox_depth",
            "Entries held: the journal's rows (serve); records waiting for the disk (collect, poll).",
            registry=registry,
        )
        self.read_seconds = Histogram(
            "rpisensor_read_seconds", "Seconds one read of an input took, from a worker thread's start.",
            buckets=READ_BUCKETS, registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "rpisensor_errors", "Errors by kind: read (failed reads), log:SUBSYSTEM (warnings and errors logged).",
            ["kind"], registry=registry,
        )  # fmt: skip
        self._observing = False

    # -- sources ---------------------------------------------------------------------

    def count_connections(self, factory) -> None:
        self.connections.set_function(lambda: len(factory.connections))

    def count_outbox(self, depth: Callable[[], int]) -> None:
        self.outbox_depth.set_function(depth)

    def count_web_streams(self, hub) -> None:
        self.web_streams.set_function(lambda: len(hub.clients))

    def read(self, seconds: float, failed: bool) -> None:
        """An L{rpisensor.sensing.reader.InputReader}'s C{on_read}."""
        self.read_seconds.observe(seconds)
        if failed:
            self.errors.labels("read").inc()

    def sent_to(self, to: str) -> Callable[[int], None]:
        """C{sent(count)}: counts readings sent C{to} a kind of receiver, one call per batch."""
        return self.readings_out.labels(to).inc

    def received(self, events) -> None:
        """A feed's listener: readings recorded."""
        self.readings_in.inc(len(events))

    # -- the log ------------------------------------------------------------------------

    def observe_log(self) -> None:
        if not self._observing:
            self._observing = True
            globalLogPublisher.addObserver(self._logged)

    def stop_observing_log(self) -> None:
        if self._observing:
            self._observing = False
            globalLogPublisher.removeObserver(self._logged)

    def _logged(self, event: dict) -> None:
        if event.get("log_level") in _LOGGED:
            self.errors.labels("log:" + _subsystem(event.get("log_namespace") or "")).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """C{GET /metrics}."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.exposition()
