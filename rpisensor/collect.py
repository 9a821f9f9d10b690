"""
The collector role (the tutorial's DataServer3 on a PC): accept any number of
reporters, log each message with its peer and time, and store it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.access import AccessPolicy
from rpisensor.guard import DrainService, GuardedFactory, ServerConnection, StopInOrder
from rpisensor.limits import ServerLimits
from rpisensor.listening import ListenerService
from rpisensor.store import Record, StoreService, store_file_for

_log = Logger(namespace="rpisensor.collect")


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
        self._paused = False

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
        if self._unstored >= self.factory.limits.max_pending and not self._paused:
            # The disk is behind: stop reading this reporter until it catches up.
            self._paused = True
            self.transport.pauseProducing()
            self.pauseMessages()

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
        if self._paused and self._unstored < self.factory.limits.max_pending:
            self._paused = False
            if not self.closing:
                self.transport.resumeProducing()
            self.resumeMessages()  # whole messages already received are stored, even at a close
        self.workDone()


class CollectorFactory(GuardedFactory):
    """
    Builds L{CollectorProtocol}s that store into C{store} (or only log, if C{None}).
    """

    protocol = CollectorProtocol

    def __init__(
        self,
        store: StoreService | None,
        clock,
        limits: ServerLimits = ServerLimits(),
        policy: AccessPolicy | None = None,
    ) -> None:
        super().__init__(limits, policy, clock)
        self.store = store


def build_collect_service(
    reactor,
    listen: list[str],
    store_path: str | None,
    limits: ServerLimits = ServerLimits(),
    policy: AccessPolicy | None = None,
    client_ca: bytes | None = None,
) -> StopInOrder:
    """
    The whole collector: the store's writer (when C{store_path} is given) and
    one listener per endpoint description in C{listen}. It stops in order:
    the listeners, then the reporters' connections once their messages are
    stored, then the store, flushed and closed.

    Opens the store at once, so that a bad path stops the program at start-up
    with one line saying why.
    """
    top = StopInOrder()
    store = None
    if store_path is None:
        _log.info("No --store given: messages are only logged. Add --store readings.jsonl to keep them.")
    else:
        file = store_file_for(store_path)
        try:
            file.open()
        except (OSError, sqlite3.Error) as e:
            raise SystemExit(f"rpisensor: cannot open the store {store_path}: {e}") from None
        store = StoreService(reactor, file)
        store.setServiceParent(top)
        _log.info("Appending messages to {path}", path=store_path)
    factory = CollectorFactory(store, reactor, limits, policy)
    DrainService(factory, reactor, timeout=10.0).setServiceParent(top)
    for description in listen:
        ListenerService(reactor, description, factory, client_ca).setServiceParent(top)
    top.factory = factory
    return top
