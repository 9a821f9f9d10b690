"""
The poller: one command every few seconds, at most one unanswered, over a
connection kept open with reconnects; with C{subscribe}, the server's
stream instead (L{rpisensor.roles.poll.subscribing}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from rpisensor.net.peers import peer_text
from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT, reconnecting_client
from rpisensor.net.request import RequestProtocol
from rpisensor.net.wording import NamedLogger
from rpisensor.roles.poll.options import DEFAULT_HELLO_TIMEOUT
from rpisensor.app.stopping import StopInOrder
from rpisensor.store import StoreService, store_service
from rpisensor.stream.heartbeat import interval_for
from rpisensor.entries import Gap, Reading


class PollProtocol(RequestProtocol):
    """
    Sends the factory's command every C{interval} seconds, at most one
    outstanding at a time. No reply within C{timeout} seconds means the link
    is dead: the connection is aborted so the client service reconnects.
    """

    _log = NamedLogger("rpisensor.poll")

    _loop: LoopingCall | None = None

    def connectionMade(self) -> None:
        self._start_connection()
        self._start_polling()

    def _start_connection(self) -> None:
        super().connectionMade()
        self.peer = peer_text(self.transport)

    def _start_polling(self) -> None:
        self._loop = LoopingCall(self._poll)
        self._loop.clock = self.factory.clock
        self._loop.start(self.factory.interval, now=True).addErrback(self._polling_failed)

    def _polling_failed(self, failure: Failure) -> None:
        self._log.failure(
            "Polling {peer} stopped (a bug: please report it); reconnecting to start again",
            failure, peer=self.peer,
        )
        self.transport.abortConnection()

    def _poll(self) -> None:
        if self.outstanding or self.transport.disconnecting:
            return
        factory = self.factory
        d = self.request(factory.command).addTimeout(factory.timeout, factory.clock)
        d.addCallbacks(self._replied, self._failed)
        d.addErrback(lambda failure: self._log.failure("Handling the reply failed", failure))

    def _replied(self, text: str) -> None:
        self._log.info("Message from {peer}: {text}", peer=self.peer, text=text)
        if self.factory.on_reply is not None:
            self.factory.on_reply(text)

    def _failed(self, failure: Failure) -> None:
        if failure.check(TimeoutError, CancelledError) and not self.transport.disconnecting:
            self._log.warn(
                "No reply to {command!r} from {peer} within {timeout} s: the link looks "
                "dead, reconnecting. Raise --timeout if the sensor is just slow.",
                command=self.factory.command,
                peer=self.peer,
                timeout=self.factory.timeout,
            )
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        super().connectionLost(reason)


class PollFactory(Factory):
    """
    Builds L{PollProtocol}s.

    @param command: the message sent each time (the tutorial's C{go}).
    @param interval: seconds between commands.
    @param timeout: seconds to wait for a reply before calling the link dead.
    @param on_reply: called with each reply's text, for programs embedding the poller.
    """

    protocol = PollProtocol
    noisy = False

    def __init__(
        self,
        clock,
        command: str = "go",
        interval: float = 2.0,
        timeout: float = 10.0,
        on_reply: Callable[[str], object] | None = None,
    ) -> None:
        self.clock = clock
        self.command = command
        self.interval = interval
        self.timeout = timeout
        self.on_reply = on_reply


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
    connect: str,
    command: str = "go",
    interval: float = 2.0,
    timeout: float = 10.0,
    max_delay: float = 60.0,
    on_reply: Callable[[str], object] | None = None,
    dead_peer_timeout: float = DEFAULT_DEAD_PEER_TIMEOUT,
    subscribe: bool = False,
    store_path: str | None = None,
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
    on_reading: Callable[[Reading], object] | None = None,
    on_gap: Callable[[Gap], object] | None = None,
) -> ClientService | PollService:
    """
    A service that keeps polling the server at the client endpoint C{connect}
    (or, with C{subscribe}, follows its stream); C{service.whenConnected()}
    gives the current protocol.

    @param dead_peer_timeout: seconds without an answer at the TCP level
        before the link counts as dead (see L{rpisensor.net.deadpeer}); 0: never.
        With C{subscribe}, a third of it is also the heartbeat interval.
    @param subscribe: say hello and follow the server's stream of readings
        (see L{rpisensor.roles.poll.subscribing}); a server that does not
        stream is polled.
    @param store_path: with C{subscribe}: store the readings there
        (C{.jsonl}, C{.sqlite}, C{.db}, as C{collect}), each exactly once;
        a L{PollService} is returned then.
    @param hello_timeout: with C{subscribe}: seconds to wait for the welcome.
    @param on_reading: with C{subscribe}: called with each reading, a
        L{Reading}, once it is stored (or at once, without a store),
        one at a time, in order; a Deferred it returns is waited for before
        the reading is acknowledged, and if it fails the server sends the
        reading again. Snapshot readings (C{reading.snapshot}) come first,
        and are not waited for.
    @param on_gap: with C{subscribe}: called with each gap (a L{Gap}) once it is stored.
    @raise ValueError: C{store_path} without C{subscribe}, or of no known format.
    """
    if not subscribe:
        if store_path is not None or on_reading is not None or on_gap is not None:
            raise ValueError("a store, on_reading or on_gap needs subscribe=True: polled replies are not a stream")
        factory = PollFactory(reactor, command, interval, timeout, on_reply)
        return reconnecting_client(reactor, connect, factory, max_delay, dead_peer_timeout=dead_peer_timeout)
    from rpisensor.roles.poll.subscribing import SubscribeFactory

    store = store_service(reactor, store_path) if store_path is not None else None
    heartbeat = interval_for(dead_peer_timeout) if dead_peer_timeout > 0 else None
    factory = SubscribeFactory(
        reactor, command, interval, timeout, on_reply, store, heartbeat, hello_timeout, on_reading, on_gap
    )
    client = reconnecting_client(reactor, connect, factory, max_delay, dead_peer_timeout=dead_peer_timeout)
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
    service = build_poll_service(
        reactor, options["connect"], options["command"], options["interval"], options["timeout"],
        options["max-delay"], dead_peer_timeout=options["dead-peer-timeout"],
        subscribe=options["subscribe"], store_path=options["store"], hello_timeout=options["hello-timeout"],
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
