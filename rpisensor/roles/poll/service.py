"""
The whole C{poll} role as one service, built from a L{PollSettings}: the
poller (L{rpisensor.roles.poll.poller}) or, with C{subscribe}, the stream's
subscriber (L{rpisensor.roles.poll.subscribing}) over a connection kept
open with reconnects, the store it writes to, and the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred

from rpisensor.stopping import StopInOrder
from rpisensor.entries import Gap, Reading
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT, reconnecting_client
from rpisensor.roles.poll.options import DEFAULT_HELLO_TIMEOUT
from rpisensor.roles.poll.poller import PollFactory
from rpisensor.roles.poll.subscribing import SubscribeFactory
from rpisensor.store import StoreService, store_service
from rpisensor.stream.heartbeat import interval_for


@dataclass(frozen=True)
class PollSettings:
    """
    What C{poll} does; each has an option of the same name.

    @ivar connect: the server, a client endpoint (C{tcp:host=192.168.0.17:port=22000}).
    @ivar command: the message sent each time (the tutorial's C{go}).
    @ivar interval: seconds between commands.
    @ivar timeout: seconds to wait for a reply before calling the link dead.
    @ivar max_retry_delay: the longest wait between reconnection attempts (C{--max-delay}).
    @ivar dead_peer_timeout: seconds without an answer at the TCP level before
        the link counts as dead (see L{rpisensor.net.deadpeer}); 0: never. With
        C{subscribe}, a third of it is also the heartbeat interval.
    @ivar subscribe: say hello and follow the server's stream of readings (see
        L{rpisensor.roles.poll.subscribing}); a server that does not stream is polled.
    @ivar store: with C{subscribe}: store the readings there (C{.jsonl},
        C{.sqlite}, C{.db}, a C{postgresql://} URL, as C{collect}), each exactly once.
    @ivar hello_timeout: with C{subscribe}: seconds to wait for the welcome.
    """

    connect: str
    command: str = "go"
    interval: float = 2.0
    timeout: float = 10.0
    max_retry_delay: float = 60.0
    dead_peer_timeout: float = DEFAULT_DEAD_PEER_TIMEOUT
    subscribe: bool = False
    store: str | None = None
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT


class PollService(StopInOrder):
    """
    C{poll --subscribe --store FILE}: the store's writer, then the client; it
    stops in the other order (the connection first, then what it was storing).

    @ivar client: the reconnecting client service.
    @ivar store: the L{StoreService}.
    @ivar factory: the client's L{SubscribeFactory}.
    """

    def __init__(self, store: StoreService, client: ClientService) -> None:
        super().__init__()
        self.store = store
        self.client = client
        self.factory = client.factory
        store.setServiceParent(self)
        client.setServiceParent(self)

    def whenConnected(self, *args, **kwargs) -> Deferred:
        """As C{ClientService.whenConnected}: the current connection's protocol."""
        return self.client.whenConnected(*args, **kwargs)


def build_poll_service(
    reactor,
    settings: PollSettings,
    *,
    on_reply: Callable[[str], object] | None = None,
    on_reading: Callable[[Reading], object] | None = None,
    on_gap: Callable[[Gap], object] | None = None,
) -> ClientService | PollService:
    """
    A service that keeps polling the server C{settings.connect} (or, with
    C{settings.subscribe}, follows its stream); C{service.whenConnected()}
    gives the current protocol, C{service.factory} what builds them. With a
    store, a L{PollService}.

    @param on_reply: called with each polled reply's text.
    @param on_reading: with C{subscribe}: called with each reading, a
        L{Reading}, once it is stored (or at once, without a store),
        one at a time, in order; a Deferred it returns is waited for before
        the reading is acknowledged, and if it fails the server sends the
        reading again. Snapshot readings (C{reading.snapshot}) come first,
        and are not waited for.
    @param on_gap: with C{subscribe}: called with each gap (a L{Gap}) once it is stored.
    @raise ValueError: a store, C{on_reading} or C{on_gap} without
        C{subscribe}, or a store of no known format.
    """
    s = settings
    if not s.subscribe:
        if s.store is not None or on_reading is not None or on_gap is not None:
            raise ValueError("a store, on_reading or on_gap needs subscribe=True: polled replies are not a stream")
        factory = PollFactory(reactor, s.command, s.interval, s.timeout, on_reply)
        client = reconnecting_client(reactor, s.connect, factory, s.max_retry_delay,
                                     dead_peer_timeout=s.dead_peer_timeout)  # fmt: skip
        client.factory = factory
        return client
    store = store_service(reactor, s.store) if s.store is not None else None
    heartbeat = interval_for(s.dead_peer_timeout) if s.dead_peer_timeout > 0 else None
    factory = SubscribeFactory(
        reactor, s.command, s.interval, s.timeout, on_reply, store, heartbeat, s.hello_timeout, on_reading, on_gap
    )
    client = reconnecting_client(reactor, s.connect, factory, s.max_retry_delay, dead_peer_timeout=s.dead_peer_timeout)
    client.factory = factory  # (what it builds the connections with, for embedding programs and tests)
    return client if store is None else PollService(store, client)


def make_service(options, reactor) -> ClientService | PollService:
    """C{poll} as its options say."""
    feed = gaps = None
    if options["web"]:
        from rpisensor.web.feed import ReceivedFeed
        from rpisensor.web.gaps import ReceivedGaps
        from rpisensor.web.history import store_gaps, store_history

        feed = ReceivedFeed(history=store_history(options["store"]))
        gaps = ReceivedGaps(store_gaps(options["store"]))
    settings = PollSettings(
        options["connect"], options["command"], options["interval"], options["timeout"], options["max-delay"],
        options["dead-peer-timeout"], options["subscribe"], options["store"], options["hello-timeout"],
    )  # fmt: skip
    service = build_poll_service(
        reactor, settings,
        on_reading=feed.on_reading if feed is not None else None,
        on_gap=gaps.on_gap if gaps is not None else None,
    )  # fmt: skip
    if feed is None:
        return service
    from rpisensor.net.limits import ListenSettings
    from rpisensor.web.roles import receiver_web

    top = service if isinstance(service, PollService) else _WithWeb(service)
    factory = service.factory
    receiver_web(
        reactor, "poll", options.web_settings(), ListenSettings(), options["store"], lambda: factory.registry,
        store=getattr(service, "store", None), feed=feed, gaps=gaps,
    ).setServiceParent(top)  # fmt: skip
    return top


class _WithWeb(StopInOrder):
    """C{poll --subscribe --web} without a store: the client, then the page (stopped first)."""

    def __init__(self, client: ClientService) -> None:
        super().__init__()
        self.client = client
        self.factory = client.factory
        client.setServiceParent(self)

    def whenConnected(self, *args, **kwargs) -> Deferred:
        return self.client.whenConnected(*args, **kwargs)
