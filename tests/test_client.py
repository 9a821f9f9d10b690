"""Tests for rpisensor.client: the request protocol and reconnect backoff, on Clock."""

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.reconnect import reconnecting_client, retry_policy
from rpisensor.net.request import RequestProtocol


class FakeEndpoint:
    """Records connection attempts (clock times) and fails or connects them as told."""

    def __init__(self, clock):
        self.clock = clock
        self.attempts = []
        self.refuse = True

    def connect(self, factory):
        self.attempts.append(self.clock.seconds())
        if self.refuse:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.protocol = protocol
        return succeed(protocol)


def gaps(times):
    return [round(b - a, 6) for a, b in zip(times, times[1:])]


class BackoffTests(SynchronousTestCase):
    def test_policy_grows_and_is_capped(self):
        """Waits double from attempt to attempt and stop growing at max_delay."""
        policy = retry_policy(initial_delay=1.0, max_delay=10.0, jitter=lambda: 0.0)
        self.assertEqual([policy(n) for n in range(1, 7)], [2.0, 4.0, 8.0, 10.0, 10.0, 10.0])

    def test_jitter_is_added(self):
        """Jitter is added on top of the capped delay, so clients spread out."""
        policy = retry_policy(max_delay=10.0, jitter=lambda: 0.25)
        self.assertEqual(policy(10), 10.25)

    def test_client_never_gives_up_and_never_hammers(self):
        """A refused client keeps retrying, with growing waits capped at max_delay."""
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol),
                                      max_delay=10.0, jitter=lambda: 0.0)  # fmt: skip
        service.startService()
        for _ in range(200):
            clock.advance(0.5)
        self.assertEqual(gaps(endpoint.attempts)[:5], [2.0, 4.0, 8.0, 10.0, 10.0])
        self.assertTrue(all(gap <= 10.0 for gap in gaps(endpoint.attempts)))
        self.assertGreaterEqual(len(endpoint.attempts), 8)

    def test_success_resets_backoff(self):
        """After a successful connection is lost, the first retry waits the shortest time again."""
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol),
                                      max_delay=10.0, jitter=lambda: 0.0)  # fmt: skip
        service.startService()
        for _ in range(4):
            clock.advance(10.0)  # several failures: waits have grown to the cap
        endpoint.refuse = False
        clock.advance(10.0)
        connected = self.successResultOf(service.whenConnected())
        self.assertIsInstance(connected, Protocol)
        endpoint.refuse = True
        lost_at = clock.seconds()
        endpoint.protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(2.0)
        self.assertEqual(endpoint.attempts[-1], lost_at + 2.0)
        service.stopService()


class RequestProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.protocol = RequestProtocol()
        self.protocol.factory = Factory()
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_replies_complete_requests_in_order(self):
        """Each reply completes the oldest outstanding request."""
        first, second = self.protocol.request("go"), self.protocol.request("ping")
        self.assertEqual(self.transport.value(), b"go\0ping\0")
        self.assertEqual(self.protocol.outstanding, 2)
        self.protocol.dataReceived(b"Button pressed\0pong\0")
        self.assertEqual(self.successResultOf(first), "Button pressed")
        self.assertEqual(self.successResultOf(second), "pong")
        self.assertEqual(self.protocol.outstanding, 0)

    def test_connection_lost_fails_outstanding(self):
        """Requests still waiting when the connection ends fail with its reason."""
        waiting = self.protocol.request("go")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(waiting, ConnectionDone)
        self.successResultOf(self.protocol.lost)

    def test_unsolicited_message(self):
        """A message nobody asked for goes to unsolicitedMessage, not to a later request."""
        seen = []
        self.protocol.unsolicitedMessage = seen.append
        self.protocol.dataReceived(b"hello\0")
        later = self.protocol.request("go")
        self.assertEqual(seen, ["hello"])
        self.assertNoResult(later)


class CancelTests(SynchronousTestCase):
    def test_cancelled_attempt_logs_no_failure(self):
        """Stopping a client mid-connect cancels the attempt without a 'failed' warning."""
        from twisted.internet.defer import Deferred
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, globalLogPublisher

        from rpisensor.net.reconnect import ReadyEndpoint

        class Hanging:
            def connect(self, factory):
                return Deferred()  # never connects; cancel errbacks it

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        attempt = ReadyEndpoint(Hanging(), "tcp:host=192.0.2.1:port=22000", clock).connect(Factory())
        attempt.cancel()
        self.failureResultOf(attempt)
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])

    def test_tls_handshake_times_out(self):
        """A TLS peer that never completes the handshake fails the attempt after the timeout."""
        from twisted.internet.defer import Deferred, TimeoutError

        from rpisensor.net.reconnect import ReadyEndpoint

        class Hanging:
            def connect(self, factory):
                return Deferred()

        clock = Clock()
        endpoint = ReadyEndpoint(Hanging(), "tls:host=localhost:port=22443", clock)
        attempt = endpoint.connect(Factory())
        clock.advance(ReadyEndpoint.HANDSHAKE_TIMEOUT - 1)
        self.assertNoResult(attempt)
        clock.advance(1)
        self.failureResultOf(attempt, TimeoutError)
