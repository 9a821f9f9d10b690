"""
The web side as a service of its role: C{--web ENDPOINT} on C{serve},
C{collect} and C{poll --subscribe}. It starts after what it shows (the
journal, the store) and stops before it: listeners first, then the pages'
event streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.application.service import MultiService
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

from rpisensor.net.limits import ListenSettings
from rpisensor.net.listening import ListenerService
from rpisensor.web.controls import Controls
from rpisensor.web.events import EventHub, EventLimits
from rpisensor.web.feed import MAX_TILES, Feed
from rpisensor.web.hosts import AllowedHosts
from rpisensor.web.metrics import Metrics
from rpisensor.web.site import WebSite, build_root


_log = Logger(namespace="rpisensor.web.service")


@dataclass(frozen=True)
class WebSettings:
    """
    @ivar endpoints: where the web side listens (C{--web}, repeatable).
    @ivar events: the bounds of the pages' event streams.
    @ivar stale_after: seconds after which a measurement's tile shows it is old
        (a digital input's reading stays current until it changes).
    @ivar max_tiles: sensors the page shows at most (the most recently updated).
    @ivar hosts: names the page answers to besides this machine's own and its
        addresses (C{--web-host}: a DNS name of yours, a proxy's).
    """

    endpoints: tuple[str, ...] = ()
    events: EventLimits = field(default_factory=EventLimits)
    stale_after: float = 60.0
    max_tiles: int = MAX_TILES
    hosts: tuple[str, ...] = ()


class WebService(MultiService):
    """
    @param info: what the page says of the role (C{role}, C{device}).
    @param health: the link and outbox health, as a JSON-able dict.
    @param gaps: what tells the health's gaps (L{rpisensor.web.gaps}), started
        and stopped with the page; a new gap is pushed to the pages at once.
    """

    def __init__(
        self,
        reactor,
        settings: WebSettings,
        listen: ListenSettings,
        info: dict,
        feed: Feed,
        metrics: Metrics,
        health: Callable[[], dict],
        controls: Controls | None = None,
        gaps=None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.feed = feed
        feed.max_tiles = settings.max_tiles
        self.gaps = gaps
        self.metrics = metrics
        self.hub = EventHub(feed, reactor, settings.events, health, metrics.sent_to("web"))
        metrics.count_web_streams(self.hub)
        if gaps is not None:
            gaps.on_change = self.hub.health_changed
        self.controls = controls if controls is not None else Controls()
        self.hosts = AllowedHosts(settings.hosts)
        self._reactor = reactor
        self.root = build_root(
            info, feed, wall, self.hub, metrics, self.controls, health, settings.stale_after, self.hosts
        )
        self.site = WebSite(self.root, reactor, listen.policy, listen.limits)
        self.listeners = [
            ListenerService(reactor, endpoint, self.site, listen.client_ca, option="--web")
            for endpoint in settings.endpoints
        ]
        for listener in self.listeners:
            listener.setServiceParent(self)

    def startService(self) -> None:
        start = getattr(self.feed, "start", None)
        if start is not None:
            maybeDeferred(start).addErrback(lambda f: _log.failure("The web page's feed did not start", f))
        if self.gaps is not None:
            self.gaps.start().addErrback(lambda f: _log.failure("The web page's gaps did not load", f))
        self.feed.add_listener(self.metrics.received)
        self.metrics.observe_log()
        self.hub.start()
        self.hosts.learn_full_name(self._reactor)
        super().startService()

    def stopService(self):
        stopping = super().stopService()  # the listeners
        self.hub.stop()
        self.feed.remove_listener(self.metrics.received)
        stop = getattr(self.feed, "stop", None)
        if stop is not None:
            stop()
        if self.gaps is not None:
            self.gaps.stop()
        self.metrics.stop_observing_log()
        return stopping
