"""
The web side of each role: what its page follows, its health and metrics.

  - C{serve}: the journal (L{JournalFeed}); health is the journal's bounds
    and gaps, the subscribers, connections and pages, and the inputs and
    sensors whose reads fail; the simulated inputs' buttons; a tile for each
    input, sensor and output it declares.
  - C{collect}, C{poll --subscribe}: what is stored (L{ReceivedFeed}), with
    history from the store; health is each device's stream: connected or
    not, from where, the last reading acknowledged (stored) and its gaps.
"""

from __future__ import annotations

from rpisensor.net.limits import ListenSettings
from rpisensor.web.controls import Controls, SimulatedInputs
from rpisensor.web.feed import JournalFeed, ReceivedFeed
from rpisensor.web.gaps import JournalGaps, ReceivedGaps, no_gaps
from rpisensor.web.history import store_gaps, store_history
from rpisensor.web.metrics import Metrics
from rpisensor.web.service import WebService, WebSettings


#: The longest error text a tile shows, in characters.
MAX_ERROR = 300


def declared_sensors(reader, outputs, stale_after: float) -> list[dict]:
    """
    C{serve}'s inputs, sensors and outputs as the page draws them, each with a tile from the
    start (a sensor that never read shows its error): C{sensor}, C{kind} (C{digital},
    C{measurement}, C{output}), and C{levels} (the texts of 0 and 1) or C{unit} and
    C{stale_after} (seconds: at least two of its intervals).
    """
    sensors = [
        {"sensor": spec.name, "kind": "digital", "levels": [spec.inactive_text, spec.active_text]}
        for spec in reader.inputs.values()
    ]
    sensors += [
        {"sensor": spec.name, "kind": "measurement", "unit": spec.unit or None,
         "stale_after": max(stale_after, 2 * spec.interval)}
        for spec in reader.sensors.values()
    ]  # fmt: skip
    if outputs is not None:
        sensors += [{"sensor": name, "kind": "output", "levels": ["off", "on"]} for name in outputs.names]
    return sensors


def serve_web(reactor, settings: WebSettings, listen: ListenSettings, top, reader, publishing,
              outputs=None) -> WebService:  # fmt: skip
    """
    C{serve}'s page. C{outputs}: the page's switches, an
    L{rpisensor.web.controls.IOutputSwitches}; by default the role's own
    outputs (C{--output}), shown to the clients its grants admit.
    """
    journal = publishing.journal
    feed = JournalFeed(journal, publishing.device)
    metrics = Metrics("serve")
    metrics.count_connections(top.factory)
    metrics.count_outbox(lambda: journal.journal.rows)
    reader.on_read = metrics.read
    publishing.on_sent = metrics.sent_to("subscriber")
    gaps = JournalGaps(journal)
    web: WebService | None = None

    def health() -> dict:
        j = journal.journal
        return {
            "journal": {"first": j.first, "last": j.last, "rows": j.rows, "gaps": gaps.describe()},
            "subscribers": len(publishing.subscriptions),
            "connections": len(top.factory.connections),
            "pages": len(web.hub.clients) if web is not None else 0,
            "errors": {name: error[:MAX_ERROR] for name, error in sorted(reader.errors.items())},
        }

    simulated = SimulatedInputs(reader) if reader.backend.name == "sim" else None
    if outputs is None and top.factory.controller is not None:
        from rpisensor.web.outputs import ControllerSwitches

        outputs = ControllerSwitches(top.factory.controller, top.factory.grants, top.factory.gate)
    sensors = declared_sensors(reader, outputs, settings.stale_after)
    info = {"role": "serve", "device": publishing.device, "sensors": sensors}
    web = WebService(reactor, settings, listen, info, feed, metrics, health, Controls(simulated, outputs), gaps)
    return web


class ReceiverHealth:
    """The streams a receiving role has, for its page: connected, last acknowledged, gaps."""

    def __init__(self, registry, connections=None, gaps: ReceivedGaps | None = None) -> None:
        self._registry = registry
        self._connections = connections
        self._gaps = gaps

    def __call__(self) -> dict:
        streams = []
        for state in self._registry():
            session = state.session
            streams.append({
                "device": state.device,
                "stream": state.stream,
                "connected": session is not None and not getattr(session, "closed", False),
                "peer": getattr(session, "peer", None),
                "acked": state.stored,
                "gaps": self._gaps.of(state.device, state.stream) if self._gaps is not None else no_gaps(),
            })  # fmt: skip
        body = {"streams": sorted(streams, key=lambda s: (s["device"], s["stream"]))}
        if self._connections is not None:
            body["connections"] = len(self._connections())
        return body


def receiver_web(reactor, role: str, settings: WebSettings, listen: ListenSettings, store_path: str | None,
                 registry, store=None, connections=None, feed: ReceivedFeed | None = None,
                 gaps: ReceivedGaps | None = None) -> WebService:  # fmt: skip
    """
    The page of C{collect} or C{poll --subscribe}.

    @param registry: returns the role's streams (L{rpisensor.stream.receiver.StreamRegistry}).
    @param store: the L{rpisensor.store.StoreService}, for the outbox depth.
    @param connections: returns the open connections (collect's reporters).
    @param feed: the feed whose C{on_reading} the role calls.
    @param gaps: the gaps whose C{on_gap} the role calls.
    """
    feed = feed if feed is not None else ReceivedFeed(history=store_history(store_path))
    gaps = gaps if gaps is not None else ReceivedGaps(store_gaps(store_path))
    metrics = Metrics(role)
    if connections is not None:
        metrics.connections.set_function(lambda: len(connections()))
    if store is not None:
        metrics.count_outbox(lambda: store.waiting)
    health = ReceiverHealth(registry, connections, gaps)
    info = {"role": role, "device": None}
    return WebService(reactor, settings, listen, info, feed, metrics, health, gaps=gaps)
