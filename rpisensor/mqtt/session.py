"""
A connection to an MQTT broker (the Pi's L{rpisensor.mqtt.link.MQTTLink}, a
collector's C{collect --mqtt} and C{--publish-mqtt}), kept up for as long as
the service runs: connected with a clean start,
tried again after the wait L{RetrySchedule} gives when it fails or drops
(promptly after a link that worked, growing while attempts fail, up to
C{max_delay}), closed cleanly on stop. Every line about it is rate-limited.

The subclass says what a connection is for: L{BrokerSession.up} once the
broker accepted it, L{BrokerSession.down} once it is gone, and the broker's
events (L{BrokerSession.published}, L{BrokerSession.message},
L{BrokerSession.subscribed}) while it is the current one;
L{BrokerSession.drop} ends a connection the broker refused to serve.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.lograte import RateLimitedLog
from rpisensor.mqtt.client import BrokerLimits, Handler, PahoConnection
from rpisensor.mqtt.settings import Broker
from rpisensor.net.backoff import RetrySchedule

#: Seconds a clean stop waits for the broker to close the link.
STOP_TIMEOUT = 5.0


class _Events(Handler):
    """One connection's events, passed on while it is the session's current one."""

    def __init__(self, session: BrokerSession) -> None:
        self._session = session
        self.connection: PahoConnection | None = None

    def _current(self) -> bool:
        return self.connection is not None and self.connection is self._session.connection

    def published(self, mid, refused):
        if self._current():
            self._session.published(mid, refused)

    def message(self, topic, payload, retained, mid):
        if self._current():
            self._session.message(topic, payload, retained, mid)

    def subscribed(self, mid, refused):
        if self._current():
            self._session.subscribed(mid, refused)

    def lost(self, reason):
        if self._current():
            self._session._lost(reason)


class BrokerSession(Service, Handler):
    """
    One connection to C{broker} at a time, for as long as the service runs.

    @param connection_factory: C{factory(handler) -> PahoConnection}; by
        default L{connect}'s, tests give their own.
    @cvar meanwhile: what the log says happens while the broker is away.
    """

    _logger = Logger(namespace="rpisensor.mqtt")
    meanwhile = "The Pis keep their readings meanwhile."

    def __init__(
        self, reactor, broker: Broker, max_delay: float, connection_factory: Callable[..., PahoConnection] | None
    ) -> None:
        self._reactor = reactor
        self.broker = broker
        self._factory = connection_factory or self.connect
        self.log = RateLimitedLog(reactor, self._logger)
        self.schedule = RetrySchedule(reactor, broker.url, max_delay)
        self.connection: PahoConnection | None = None
        self._retry = None
        self._stopped: Deferred | None = None
        #: The current connection is being ended because the broker refused something.
        self._refusal = False

    def connect(self, handler: Handler) -> PahoConnection:
        """A new connection to the broker that tells C{handler} what happens."""
        raise NotImplementedError

    def up(self, connection: PahoConnection, limits: BrokerLimits) -> None:
        """The broker accepted C{connection}: it is the current one."""

    def down(self) -> None:
        """The current connection is gone (or the service stops)."""

    async def before_stop(self) -> None:
        """What a clean stop waits for while the link is still up."""

    # -- life ------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        await self.before_stop()
        connection = self.connection
        if connection is not None and connection.state == "connected":
            self._stopped = Deferred()
            self._stopped.addTimeout(STOP_TIMEOUT, self._reactor)
            connection.disconnect()
            try:
                await self._stopped
            except Exception:
                connection.abort()
        elif connection is not None:
            connection.abort()
        self.connection = None
        self.down()
        self.log.flush()

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.connection.state == "connected"

    def drop(self) -> None:
        """
        End the current connection on purpose, because the broker refused
        something it must take: it counts as a failed attempt, so the waits
        before the next ones grow.
        """
        if self.connection is not None:
            self._refusal = True
            self.connection.abort()

    # -- connecting -------------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        if not self.running:
            return
        events = _Events(self)
        connection = self.connection = events.connection = self._factory(events)
        self.log.info("Connecting to the MQTT broker {url}", key="connecting", url=self.broker.url)
        connection.connect().addCallbacks(self._connected, self._failed, (connection,), None, (connection,))

    def _failed(self, failure: Failure, connection: PahoConnection) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.log.warn(
            "Could not connect to the MQTT broker {url}: {why}. {meanwhile}",
            key="connect failed", url=self.broker.url, why=failure.getErrorMessage(), meanwhile=self.meanwhile,
        )  # fmt: skip
        self.schedule.attempt_failed()
        self._again()

    def _again(self) -> None:
        if self.running and self._retry is None:
            self._retry = self._reactor.callLater(self.schedule(0), self._connect)

    def _connected(self, limits: BrokerLimits, connection: PahoConnection) -> None:
        if connection is not self.connection:
            return
        if not self.running:
            connection.disconnect()
            return
        self.schedule.connected()
        self.up(connection, limits)

    def _lost(self, reason: str) -> None:
        refused, self._refusal = self._refusal, False
        self.connection = None
        self.down()
        if self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)
            return
        self.log.warn(
            "Disconnected from the MQTT broker {url}: {reason}. {meanwhile}",
            key="lost", url=self.broker.url, reason=reason, meanwhile=self.meanwhile,
        )  # fmt: skip
        self.schedule.lost(refused=refused)
        self._again()
