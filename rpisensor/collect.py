"""
The collector role (the tutorial's DataServer3 on a PC): accept any number of
reporters, log each message with its peer and time, and store it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from twisted.application.service import MultiService
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor import wire
from rpisensor.protocol import NullTerminatedProtocol, peer_text
from rpisensor.listening import ListenerService
from rpisensor.store import Record, StoreService, store_file_for

_log = Logger(namespace="rpisensor.collect")


def utc_now_iso(clock) -> str:
    """The clock's time as UTC ISO 8601 with milliseconds, e.g. 2026-11-25T13:05:00.123Z."""
    moment = datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CollectorProtocol(NullTerminatedProtocol):
    """
    One reporter's connection. Each whole message is stored, then logged; a
    message cut off by a lost connection (no NUL yet) is never stored.
    """

    _log = Logger()

    def connectionMade(self) -> None:
        self.peer = peer_text(self.transport)
        self.factory.connections.add(self)
        self._log.info("Reporter connected from {peer}", peer=self.peer)

    def messageReceived(self, text: str) -> None:
        record = Record(utc_now_iso(self.factory.clock), self.peer, text)
        if self.factory.store is None:
            self._stored(None, record)
            return
        stored = self.factory.store.append(record)
        stored.addCallbacks(self._stored, self._store_failed, (record,), None, (record,))

    def _stored(self, _, record: Record) -> None:
        self._log.info("Message from {peer}: {text}", peer=record.peer, text=record.message)

    def _store_failed(self, failure: Failure, record: Record) -> None:
        self._log.error(
            "Could not store the message from {peer} ({text!r}): {error}. "
            "Check the disk and the store file.",
            peer=record.peer,
            text=record.message,
            error=failure.getErrorMessage(),
        )

    def connectionLost(self, reason: Failure) -> None:
        self.factory.connections.discard(self)
        self._log.info("Reporter {peer} disconnected", peer=self.peer)


class CollectorFactory(Factory):
    """
    Builds L{CollectorProtocol}s that store into C{store} (or only log, if C{None}).

    @param max_message_bytes: largest message accepted, in bytes.
    """

    protocol = CollectorProtocol
    noisy = False

    def __init__(
        self,
        store: StoreService | None,
        clock,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.store = store
        self.clock = clock
        self.maxMessageBytes = max_message_bytes
        self.connections: set[CollectorProtocol] = set()


def build_collect_service(
    reactor,
    listen: list[str],
    store_path: str | None,
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
) -> MultiService:
    """
    The whole collector: the store's writer (when C{store_path} is given) and
    one listener per endpoint description in C{listen}.

    Opens the store at once, so that a bad path stops the program at start-up
    with one line saying why.
    """
    top = MultiService()
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
    factory = CollectorFactory(store, reactor, max_message_bytes)
    for description in listen:
        ListenerService(reactor, description, factory).setServiceParent(top)
    top.factory = factory
    return top
