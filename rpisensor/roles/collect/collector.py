"""
The collector: every whole message a reporter sends is stored, then logged;
a v2 reporter's stream is stored exactly once and acknowledged once durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.stopping import DrainService, StopInOrder
from rpisensor.net.admission import AdmittingFactory
from rpisensor.net.connection import Pause, ServerConnection
from rpisensor.net.limits import ListenSettings
from rpisensor.net.listening import ListenerService
from rpisensor.net.tls import certificate_name
from rpisensor.roles.collect.session import ReportSession, check_hello
from rpisensor.store import Record, StoreService, store_service
from rpisensor.stream.delivery import Delivery, OnGap, OnReading, Stamp
from rpisensor.stream.receiver import Refusal, StreamRegistry
from rpisensor.entries import Reading, Entry
from rpisensor.lograte import RateLimitedLog
from rpisensor.wire import v2

_log = Logger(namespace="rpisensor.roles.collect")


class CollectorProtocol(ServerConnection):
    """
    One reporter's connection. A first message that is a v2 C{hello} makes it
    a stream (L{ReportSession}): entries stored exactly once, acknowledged
    once durable. Anything else keeps v1, the tutorial's protocol: each whole
    message is stored, then logged; a message cut off by a lost connection
    (no NUL yet) is never stored.
    """

    _log = Logger()
    peer_role = "Reporter"
    #: The v2 session, once the reporter said hello.
    session: ReportSession | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._unstored = 0
        self._first = True

    @property
    def busy(self) -> bool:
        return self._unstored > 0

    @property
    def unstored(self) -> int:
        """Messages or stream entries on their way to the store."""
        return self._unstored

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        if session is None:
            super().dataReceived(data)  # a hello in it makes the session; what follows is stored one by one
            return
        if data:
            session.heard()
        # All the entries of one read from the socket go to the store as one batch.
        session.hold()
        try:
            super().dataReceived(data)
        finally:
            session.flush()

    def messageReceived(self, text: str) -> None:
        if not text:
            return  # an empty message carries no reading (serve ignores them too)
        if self.session is not None:
            self.session.message(text)
            return
        if self._first:
            self._first = False
            if text.split(" ", 1)[0] == "hello":
                self._hello(text)
                return
        record = Record(self.factory.stamp(), self.peer, text)
        if self.factory.store is None:
            self._log_message(record)
            return
        self.entry_taken()
        stored = self.factory.store.append(record)
        stored.addCallbacks(self._stored, self._store_failed, (record,), None, (record,))
        stored.addBoth(self.entry_done)

    def _hello(self, text: str) -> None:
        """A v2 reporter: check its hello, then open its stream (welcome) or say why not (refused)."""
        identity = certificate_name(self.transport) if self.client_certificate_required else None
        try:
            hello = check_hello(text, identity, self.client_certificate_required)
        except v2.FrameError as e:
            # Not a hello we understand: v1 it is, as with a collector before v2.
            self.peer_log.warn(
                "Reporter {peer} said hello in a way this collector does not understand ({error}); "
                "treating it as a plain (v1) reporter.",
                key="malformed hellos", peer=self.peer, error=str(e),
            )  # fmt: skip
            self.sendMessage(f"error: {e}")
            return
        except Refusal as e:
            self.peer_log.warn(
                "Refused the stream of {peer}: {error}", key="refused streams", peer=self.peer, error=str(e)
            )
            self.sendMessage(v2.encode(v2.Refused(str(e))))
            self.transport.loseConnection()
            return
        self.session = ReportSession(self, hello, identity)

    def _stored(self, _, record: Record) -> None:
        self._log_message(record)

    def _store_failed(self, failure: Failure, record: Record) -> None:
        self._log.error(
            "Could not store the message from {peer} ({text!r}): {error}. "
            "Check the disk and the store file.",
            peer=record.peer,
            text=record.message,
            error=failure.getErrorMessage(),
        )

    def _log_message(self, record: Record) -> None:
        self._log.info("Message from {peer}: {text}", peer=record.peer, text=record.message)

    @property
    def pending_limit(self) -> int:
        # A stream's sender keeps its own window: the bound for it is a safety net, not flow control.
        return self.factory.max_stream_pending if self.session is not None else self.factory.limits.max_pending

    def entry_taken(self, count: int = 1) -> None:
        """C{count} messages or stream entries are on their way to the store."""
        self._unstored += count
        if self._unstored >= self.pending_limit:
            self.pause(Pause.PENDING)  # the disk is behind: stop reading this reporter until it catches up

    def entry_done(self, result=None, count: int = 1):
        """C{count} of them are stored, or failed (passes C{result} on)."""
        self._unstored -= count
        if self.paused:  # (the common case, reading on, costs no more than this test)
            if self._unstored < self.pending_limit:
                self.resume(Pause.PENDING)  # whole messages already received are stored, even at a close
            self.workDone()
        return result

    def connectionLost(self, reason: Failure) -> None:
        if self.session is not None:
            self.session.connection_lost()
        super().connectionLost(reason)


#: Entries of one v2 reporter on their way to the store before it is not read
#: (--max-stream-pending): twice a reporter's window (5000 by default), so
#: only a sender that ignores its window meets it.
MAX_STREAM_PENDING = 10_000
#: Stored readings of one stream logged one by one per window (then a count of the rest).
READING_LINES = 20
READING_WINDOW = 60.0


class CollectorFactory(AdmittingFactory):
    """
    Builds L{CollectorProtocol}s that store into C{store} (or only log, if C{None}).

    @param on_reading: called with each v2 reading (a L{Reading}) once
        it is stored, in order; it may return a Deferred, and the reading is
        acknowledged only once that fires (see L{Delivery}).
    @param max_stream_pending: entries of one v2 reporter on their way to the
        store at most; beyond that it is not read until they are stored.
    @param on_gap: called with each gap (a L{Gap}) once it is stored.
    """

    protocol = CollectorProtocol

    def __init__(
        self,
        store: StoreService | None,
        clock,
        settings: ListenSettings = ListenSettings(),
        on_reading: OnReading | None = None,
        max_stream_pending: int = MAX_STREAM_PENDING,
        on_gap: OnGap | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings.limits, settings.policy, clock)
        self.store = store
        self.max_stream_pending = max_stream_pending
        self.stamp = Stamp(wall)
        self._registry: StreamRegistry | None = None
        self.stream_log = RateLimitedLog(clock, _log)
        self._reading_log = RateLimitedLog(clock, _log, burst=READING_LINES, window=READING_WINDOW)
        self._every_reading = _EveryLine(_log)
        self.delivery = Delivery(store, on_reading, on_gap)

    @property
    def registry(self) -> StreamRegistry:
        """The streams this collector knows (where each stands is asked from the store at each hello)."""
        if self._registry is None:
            self._registry = StreamRegistry(self.store)
        return self._registry

    def show_all(self, records: list[Entry]) -> None:
        """
        Lines for stored readings (of one stream): a bounded number per stream
        (a replay can bring 50,000 a second); without a store, the log is all
        there is: every one.
        """
        log = self._reading_log if self.store is not None else self._every_reading
        for n, record in enumerate(records):
            if not isinstance(record, Reading):
                continue
            key = f"readings of {record.device} {record.stream}"
            shown = log.info(
                "Reading {seq} of {device} from {peer}: {sensor}: {text}",
                key=key, seq=record.seq, device=record.device, peer=record.peer, sensor=record.sensor,
                text=record.text,
            )  # fmt: skip
            if not shown:  # the stream's lines are used up for now: the rest are counted at once
                rest = sum(isinstance(r, Reading) for r in records[n + 1 :])
                log.left_out(key, rest)
                return

    def logPrefix(self) -> str:
        return "rpisensor collect"


class _EveryLine:
    """A L{RateLimitedLog}'s C{info}, without the limit."""

    def __init__(self, logger: Logger) -> None:
        self._logger = logger

    def info(self, format: str, key: str | None = None, **fields) -> bool:
        self._logger.info(format, **fields)
        return True


class CollectService(StopInOrder):
    """
    The whole collector. It stops in order: the listeners, then the reporters'
    connections once their messages are stored, then the store.

    @ivar factory: the L{CollectorFactory} every listener uses.
    """

    def __init__(self, factory: CollectorFactory) -> None:
        super().__init__()
        self.factory = factory


def build_collect_service(
    reactor,
    store_path: str | None,
    settings: ListenSettings = ListenSettings(),
    on_reading: OnReading | None = None,
    max_stream_pending: int = MAX_STREAM_PENDING,
    on_gap: OnGap | None = None,
    timescale: bool = False,
    bridge=None,
) -> CollectService:
    """
    The whole collector: the store's writer (when C{store_path} is given) and
    one listener per endpoint in C{settings}.

    @param store_path: a store file, or a C{postgresql://} URL (with
        C{timescale}: readings in a TimescaleDB hypertable).

    @param on_reading: for programs embedding the collector: called with each
        v2 reading once it is stored (see L{CollectorFactory}); C{on_gap}, with each gap.
    @param bridge: a L{rpisensor.mqtt.bridge.Bridge} that publishes every
        v2 entry before it is stored (C{--publish-mqtt}); it stops once the
        reporters' connections drained, before the store.

    The store is opened when the service starts, not here: under twistd,
    after daemonizing and after C{--uid} drops privileges. If it cannot be
    opened, starting raises L{rpisensor.store.StoreOpenError}, whose message
    is one line naming the file.

    @raise ValueError: the store's suffix is not one of a known format.
    """
    store = None
    if store_path is None:
        _log.info("No --store given: messages are only logged. Add --store readings.jsonl to keep them.")
    else:
        store = store_service(reactor, store_path, timescale)
    factory = CollectorFactory(store, reactor, settings, on_reading, max_stream_pending, on_gap)
    top = CollectService(factory)
    if store is not None:
        store.setServiceParent(top)
    if bridge is not None:
        factory.delivery.publish = bridge.publish
        bridge.setServiceParent(top)
    DrainService(factory, reactor, timeout=10.0).setServiceParent(top)
    for description in settings.endpoints:
        ListenerService(reactor, description, factory, settings.client_ca).setServiceParent(top)
    return top


def make_service(options, reactor) -> CollectService:
    """C{collect} as its options say."""
    listen = options.listen_settings()
    feed = gaps = None
    if options["web"]:
        from rpisensor.web.feed import ReceivedFeed
        from rpisensor.web.gaps import ReceivedGaps
        from rpisensor.web.history import store_gaps, store_history

        feed = ReceivedFeed(history=store_history(options["store"]))
        gaps = ReceivedGaps(store_gaps(options["store"]))
    bridge = None
    if options["publish-mqtt"]:
        from rpisensor.roles.collect.mqtt import bridge_for

        bridge = bridge_for(options, reactor)
    top = build_collect_service(
        reactor, options["store"], listen, feed.on_reading if feed is not None else None,
        max_stream_pending=options["max-stream-pending"], on_gap=gaps.on_gap if gaps is not None else None,
        timescale=options["timescale"], bridge=bridge,
    )  # fmt: skip
    if options["mqtt"]:  # added last: it stops first, while the store still takes its batches
        from rpisensor.roles.collect.mqtt import ingest_for

        ingest_for(options, reactor, top.factory).setServiceParent(top)
    if feed is not None:
        from rpisensor.web.roles import receiver_web

        factory = top.factory
        receiver_web(
            reactor, "collect", options.web_settings(), listen, options["store"], lambda: factory.registry,
            store=factory.store, connections=lambda: factory.connections, feed=feed, gaps=gaps,
        ).setServiceParent(top)  # fmt: skip
    return top
