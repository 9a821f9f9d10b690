"""
Tests for the client side of rpisensor.net: the request protocol, the retry
schedule of reconnecting clients and what they log; on Clock.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor import wire
from rpisensor.net.backoff import JITTER, PROMPT_DELAY, STORY_BURST
from rpisensor.net.deadpeer import DeadPeerDetection
from rpisensor.net.reconnect import reconnecting_client, retry_delay
from rpisensor.net.request import PEER_LINE_BURST, RequestProtocol


class FakeEndpoint:
    """Records connection attempts (clock times) and fails or connects them as told."""

    def __init__(self, clock):
        self.clock = clock
        self.attempts = []
        self.refuse = True
        self.close_at_once = False

    def connect(self, factory):
        self.attempts.append(self.clock.seconds())
        if self.refuse:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.protocol = protocol
        if self.close_at_once:  # in the next turn, as a real transport would
            self.clock.callLater(0, protocol.connectionLost, Failure(ConnectionDone()))
        return succeed(protocol)

    def next_attempt_in(self):
        """Seconds until the next scheduled call (the next attempt)."""
        return min(call.getTime() for call in self.clock.getDelayedCalls()) - self.clock.seconds()

    def run_attempts(self, count):
        """Advance the clock to each of the next C{count} attempts, exactly."""
        for _ in range(count):
            self.clock.advance(self.next_attempt_in())


def gaps(times):
    return [round(b - a, 6) for a, b in zip(times, times[1:])]


class BackoffTests(SynchronousTestCase):
    def test_quick_first_then_doubling_to_the_cap(self):
        """0.2, 0.5, 1, 2, then doubling, capped at max_delay: a LAN reboot is picked up at once."""
        delays = [retry_delay(n, max_delay=10.0, jitter=lambda: 0.0) for n in range(8)]
        self.assertEqual(delays, [0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])

    def test_jitter_stretches_each_wait_by_up_to_a_quarter(self):
        """Jitter makes a wait up to a quarter longer, so clients spread out."""
        self.assertEqual(retry_delay(7, max_delay=10.0, jitter=lambda: 1.0), 10.0 * (1 + JITTER))
        self.assertEqual(retry_delay(1, jitter=lambda: 0.5), 0.5 * (1 + JITTER / 2))

    def test_client_never_gives_up_and_never_hammers(self):
        """A refused client keeps retrying, with growing waits capped at max_delay."""
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol),
                                      max_delay=10.0, jitter=lambda: 0.0)  # fmt: skip
        service.startService()
        for _ in range(200):
            clock.advance(0.5)
        self.assertEqual(gaps(endpoint.attempts)[:7], [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
        self.assertTrue(all(gap <= 10.0 for gap in gaps(endpoint.attempts)))
        self.assertGreaterEqual(len(endpoint.attempts), 8)

    def test_prompt_retry_after_a_connection_that_worked(self):
        """
        A connection that lived a while and is lost is retried in well under a second, not
        after the 2 s of a first failure; jitter spreads the retries.
        """
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        endpoint.refuse = False
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol),
                                      max_delay=10.0, jitter=lambda: 0.5)  # fmt: skip
        service.startService()
        self.successResultOf(service.whenConnected())
        clock.advance(5.0)
        endpoint.protocol.connectionLost(Failure(ConnectionLost()))
        wait = PROMPT_DELAY * (1 + 0.5 * JITTER)
        self.assertLess(wait, 1.0)
        clock.advance(wait - 0.01)
        self.assertEqual(len(endpoint.attempts), 1)
        clock.advance(0.01)
        self.assertEqual(len(endpoint.attempts), 2)
        service.stopService()

    def test_backoff_resumes_when_the_prompt_retry_fails(self):
        """After the prompt retry fails, waits grow again from 0.5 s; a good link resets them."""
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        endpoint.refuse = False
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol),
                                      max_delay=10.0, jitter=lambda: 0.0)  # fmt: skip
        service.startService()
        clock.advance(5.0)
        endpoint.refuse = True
        endpoint.protocol.connectionLost(Failure(ConnectionLost()))
        endpoint.run_attempts(5)
        self.assertEqual(endpoint.attempts[1], 5.0 + PROMPT_DELAY)
        self.assertEqual(gaps(endpoint.attempts[1:]), [0.5, 1.0, 2.0, 4.0])
        endpoint.refuse = False
        endpoint.run_attempts(1)
        clock.advance(5.0)
        endpoint.protocol.connectionLost(Failure(ConnectionLost()))
        endpoint.run_attempts(1)
        self.assertEqual(gaps(endpoint.attempts[-2:]), [5.0 + PROMPT_DELAY])
        service.stopService()

    def test_server_that_closes_at_once_is_not_hammered(self):
        """Connections that end at once count as failed attempts: the waits grow as for refusals."""
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        endpoint.refuse = False
        endpoint.close_at_once = True
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol),
                                      max_delay=10.0, jitter=lambda: 0.0)  # fmt: skip
        service.startService()
        endpoint.run_attempts(10)
        self.assertEqual(gaps(endpoint.attempts)[:7], [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
        service.stopService()

    def test_refusal_backs_off(self):
        """
        A server that says C{error: ...} and closes (a refusal) is tried again with backoff, even
        when the connection lived a while (a slow TLS handshake, say); the line is logged once.
        """
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        endpoint.refuse = False
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(RequestProtocol),
                                      max_delay=10.0, jitter=lambda: 0.0)  # fmt: skip
        service.startService()
        for _ in range(3):
            clock.advance(1.0)
            endpoint.protocol.dataReceived(b"error: refused: 192.0.2.7 is not allowed\0")
            endpoint.protocol.connectionLost(Failure(ConnectionDone()))
            endpoint.run_attempts(1)
        self.assertEqual(gaps(endpoint.attempts), [1.0 + 0.5, 1.0 + 1.0, 1.0 + 2.0])
        said = [e for e in events if "the server said" in e.get("log_format", "")]
        self.assertEqual(len(said), 3)  # once per refusal
        self.assertEqual(said[0]["said"], "error: refused: 192.0.2.7 is not allowed")
        service.stopService()

    def test_retry_lines_are_ours(self):
        """
        ClientService's C{Scheduling retry ... in 2.625943262183468 seconds} is not logged; ours
        says where, the wait rounded, and the attempt, under a plain namespace.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol), max_delay=10.0,
                                      jitter=lambda: 0.625943262183468,
                                      description="tcp:host=192.0.2.1:port=22000")  # fmt: skip
        service.startService()
        clock.advance(10.0)
        texts = [formatEvent(e) for e in events]
        self.assertEqual([t for t in texts if "Scheduling" in t], [])
        self.assertIn("Reconnecting to tcp:host=192.0.2.1:port=22000 in 0.6 s (attempt 1)", texts)  # 0.5 s + jitter
        self.assertIn("Reconnecting to tcp:host=192.0.2.1:port=22000 in 1.2 s (attempt 2)", texts)
        refused = [t for t in texts if t.startswith("Connection to")]
        self.assertEqual(refused[0], "Connection to tcp:host=192.0.2.1:port=22000 failed: connection "
                         "refused. Check the address, and that the server is running and reachable.")  # fmt: skip
        self.assertNotIn("..", "".join(refused))
        namespaces = {e["log_namespace"] for e in events}
        self.assertEqual(namespaces, {"rpisensor.client"})
        service.stopService()

    def test_story_lines_are_rate_limited(self):
        """A link that flaps forever cannot log forever: each kind of line has a budget per minute."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        endpoint.refuse = False
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(RequestProtocol),
                                      max_delay=10.0, jitter=lambda: 0.0)  # fmt: skip
        service.startService()
        for _ in range(25):  # within one minute, connections that work for a second, then drop
            clock.advance(1.0)
            endpoint.protocol.connectionLost(Failure(ConnectionLost()))
            endpoint.run_attempts(1)
        self.assertEqual(len(endpoint.attempts), 26)
        connected = [e for e in events if e.get("log_format") == "Connected to {where}"]
        self.assertEqual(len(connected), STORY_BURST)
        service.stopService()


class FakeWatch:
    def __init__(self, on_dead):
        self.on_dead = on_dead
        self.stopped = False

    def stop(self):
        self.stopped = True


class FakeDeadPeerPolicy:
    """Stands where DeadPeerDetection stands; records the watch of each connection."""

    timeout = 30.0

    def __init__(self):
        self.watches = []

    def watch(self, transport, clock, on_dead):
        self.watches.append(FakeWatch(on_dead))
        return self.watches[-1]


class DeadPeerSeamTests(SynchronousTestCase):
    def test_dead_peer_aborts_and_reconnects_promptly(self):
        """
        Each connection is watched; a dead verdict logs why and aborts the link, its watch stops,
        and the client comes back promptly (the link had worked).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        endpoint.refuse = False
        policy = FakeDeadPeerPolicy()
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(Protocol), jitter=lambda: 0.0,
                                      description="tcp:host=192.0.2.1:port=22000", dead_peer=policy)  # fmt: skip
        service.startService()
        self.assertEqual(len(policy.watches), 1)
        clock.advance(40.0)
        policy.watches[0].on_dead("no acknowledgement of the data sent for 30 s")
        transport = endpoint.protocol.transport
        self.assertTrue(transport.disconnecting)
        [line] = [formatEvent(e) for e in events if "looks dead" in e["log_format"]]
        self.assertEqual(line, "No answer from tcp:host=192.0.2.1:port=22000: no acknowledgement of the data "
                         "sent for 30 s. The link looks dead (--dead-peer-timeout 30 s); reconnecting.")  # fmt: skip
        endpoint.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(policy.watches[0].stopped)
        endpoint.run_attempts(1)
        self.assertEqual(gaps(endpoint.attempts), [40.0 + PROMPT_DELAY])
        self.assertEqual(len(policy.watches), 2)
        service.stopService()

    def test_policy_from_the_timeout(self):
        """reconnecting_client watches with the timeout given, and not at all with 0."""
        clock = Clock()
        service = reconnecting_client(clock, FakeEndpoint(clock), Factory(), dead_peer_timeout=12.0)
        self.assertEqual(service.endpoint.dead_peer, DeadPeerDetection(12.0))
        service = reconnecting_client(clock, FakeEndpoint(clock), Factory(), dead_peer_timeout=0)
        self.assertIsNone(service.endpoint.dead_peer)


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


    def test_blank_request_is_refused(self):
        """
        A blank request raises, and nothing is sent: the server would not answer it, and every
        later request would get the reply meant for the one before.
        """
        for blank in ("", " ", "\r\n", "\t "):
            with self.assertRaises(wire.MessageError) as raised:
                self.protocol.request(blank)
            self.assertIn("blank", str(raised.exception))
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.protocol.outstanding, 0)
        later = self.protocol.request("go")
        self.protocol.dataReceived(b"Button released\0")
        self.assertEqual(self.successResultOf(later), "Button released")

    def test_request_after_the_connection_ended_fails_at_once(self):
        """A request made once the connection is gone fails at once with the reason it ended."""
        self.protocol.connectionLost(Failure(ConnectionLost()))
        late = self.protocol.request("go")
        self.failureResultOf(late, ConnectionLost)
        self.assertEqual(self.protocol.outstanding, 0)

    def test_unsolicited_messages_are_rate_limited(self):
        """A server sending message after message cannot fill the log: a few lines, then a count."""
        clock = Clock()
        factory = Factory()
        factory.clock = clock
        protocol = RequestProtocol()
        protocol.factory = factory
        protocol.makeConnection(StringTransport())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol.dataReceived(b"spam\0" * 100)
        logged = [e for e in events if "answers no request" in e["log_format"]]
        self.assertEqual(len(logged), PEER_LINE_BURST)
        clock.advance(61)
        protocol.dataReceived(b"spam\0")
        summary = [formatEvent(e) for e in events if "more lines like this" in e["log_format"]]
        self.assertEqual(len(summary), 1)
        self.assertTrue(summary[0].startswith(f"{100 - PEER_LINE_BURST} more lines"), summary)


class DisconnectWordingTests(SynchronousTestCase):
    def disconnect_line(self, reason, received=b""):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol = RequestProtocol()
        protocol.factory = Factory()
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 22000)))
        protocol.dataReceived(received)
        protocol.connectionLost(Failure(reason))
        [line] = [formatEvent(e) for e in events if e["log_format"].startswith("Disconnected")]
        self.assertEqual({e["log_namespace"] for e in events}, {"rpisensor.client"})
        return line

    def test_plain_words(self):
        """Disconnect reasons are said in plain words, not in Twisted's."""
        self.assertEqual(self.disconnect_line(ConnectionDone()),
                         "Disconnected from 192.0.2.9:22000: the other end closed the connection")
        self.assertEqual(self.disconnect_line(ConnectionLost()),
                         "Disconnected from 192.0.2.9:22000: the connection broke (reset by the "
                         "other end, or no answer from it)")  # fmt: skip

    def test_parting_error(self):
        """A server that says C{error: ...} and closes: the line says what it said."""
        line = self.disconnect_line(ConnectionDone(), b"error: busy: 64 clients already\0")
        self.assertEqual(line, "Disconnected from 192.0.2.9:22000: the server said "
                         "'error: busy: 64 clients already' and closed the connection")  # fmt: skip

    def test_error_reply_then_more_is_no_parting_error(self):
        """An C{error:} reply followed by other messages is an ordinary reply."""
        line = self.disconnect_line(ConnectionDone(), b"error: unknown command 'x'\0pong\0")
        self.assertNotIn("said", line)


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


class OwnCloseTests(SynchronousTestCase):
    def test_a_stop_says_this_side_closed(self):
        """
        Stopping the client (SIGTERM) logs that this side closed the connection,
        not that the other end did, nor an error line the server sent earlier.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        endpoint = FakeEndpoint(clock)
        endpoint.refuse = False
        service = reconnecting_client(clock, endpoint, Factory.forProtocol(RequestProtocol), jitter=lambda: 0.0)
        service.startService()
        protocol = endpoint.protocol
        protocol.dataReceived(b"error: unknown command 'x'; send 'help' for the list\0")
        service.stopService()
        protocol.connectionLost(Failure(ConnectionDone()))
        lines = [formatEvent(e) for e in events if "Disconnected from" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("this client closed the connection (it is stopping)", lines[0])
