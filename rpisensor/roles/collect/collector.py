"""
The collector: every whole message a reporter sends is stored, then logged.
"""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.app.stopping import DrainService, StopInOrder
from rpisensor.net.admission import AdmittingFactory
from rpisensor.net.connection import Pause, ServerConnection
from rpisensor.net.limits import ListenSettings
from rpisensor.net.listening import ListenerService
from rpisensor.store import Record, StoreService, store_file_for

_log = Logger(namespace="rpisensor.roles.collect")


def utc_now_iso(clock) -> str:
    """The clock's time as UTC ISO 8601 with milliseconds, e.g. 2026-11-25T13:05:00.123Z."""
    moment = datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CollectorProtocol(ServerConnection):
    """
    One reporter's connection. Each whole message is stored, then logged; a
    message cut off by a lost connection (no NUL yet) is never stored.
    """

    _log = Logger()
    peer_role = "Reporter"

    def connectionMade(self) -> None:
        super().connectionMade()
        self._unstored = 0

    @property
    def busy(self) -> bool:
        return self._unstored > 0

    def messageReceived(self, text: str) -> None:
        if not text:
            return  # an empty message carries no reading (serve ignores them too)
        record = Record(utc_now_iso(self.factory.clock), self.peer, text)
        if self.factory.store is None:
            self._log_message(record)
            return
        self._unstored += 1
        stored = self.factory.store.append(record)
        stored.addCallbacks(self._stored, self._store_failed, (record,), None, (record,))
        if self._unstored >= self.factory.limits.max_pending:
            self.pause(Pause.PENDING)  # the disk is behind: stop reading this reporter until it catches up

    def _stored(self, _, record: Record) -> None:
        self._log_message(record)
        self._written()

    def _store_failed(self, failure: Failure, record: Record) -> None:
        self._log.error(
            "Could not store the message from {peer} ({text!r}): {error}. "
            "Check the disk and the store file.",
            peer=record.peer,
            text=record.message,
            error=failure.getErrorMessage(),
        )
        self._written()

    def _log_message(self, record: Record) -> None:
        self._log.info("Message from {peer}: {text}", peer=record.peer, text=record.message)

    def _written(self) -> None:
        self._unstored -= 1
        if self._unstored < self.factory.limits.max_pending:
            self.resume(Pause.PENDING)  # whole messages already received are stored, even at a close
        self.workDone()


class CollectorFactory(AdmittingFactory):
    """
    Builds L{CollectorProtocol}s that store into C{store} (or only log, if C{None}).
    """

    protocol = CollectorProtocol

    def __init__(
        self,
        store: StoreService | None,
        clock,
        settings: ListenSettings = ListenSettings(),
    ) -> None:
        super().__init__(settings.limits, settings.policy, clock)
        self.store = store

    def logPrefix(self) -> str:
        return "rpisensor collect"


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
) -> CollectService:
    """
    The whole collector: the store's writer (when C{store_path} is given) and
    one listener per endpoint in C{settings}.

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
        store = StoreService(reactor, store_file_for(store_path))
    factory = CollectorFactory(store, reactor, settings)
    top = CollectService(factory)
    if store is not None:
        store.setServiceParent(top)
    DrainService(factory, reactor, timeout=10.0).setServiceParent(top)
    for description in settings.endpoints:
        ListenerService(reactor, description, factory, settings.client_ca).setServiceParent(top)
    return top


def make_service(options, reactor) -> CollectService:
    """C{collect} as its options say."""
    return build_collect_service(reactor, options["store"], options.listen_settings())
