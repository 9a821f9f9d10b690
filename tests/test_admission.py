"""
L{rpisensor.net.admission.AdmittingFactory} and the connection base on
Twisted's doubles (Clock, StringTransport, real TLS in memory): the cap per
peer address, the TLS handshake deadline, refusals that say why, the idle
sweep (what is idle, and a sweep that fails), the drain at stop, and the log
lines a flood of peers can cause.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.access import AccessPolicy
from rpisensor.net.admission import CONNECTION_LOG_BURST, CONNECTION_LOG_WINDOW, Refusal
from rpisensor.net.connection import Pause
from rpisensor.net.limits import ServerLimits
from tests.certs import Credential, make_pki
from tests.support import CollectorHarness, ServerHarness, replies

STRANGER = IPv4Address("TCP", "203.0.113.7", 40000)
OTHER_STRANGER = IPv4Address("TCP", "198.51.100.2", 40000)
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)
#: Everyone may connect, as with --client-ca: only the limits refuse.
EVERYONE = AccessPolicy([])


def connect(factory, address):
    """Build what C{factory} builds for a peer at C{address}; connect it to a StringTransport."""
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def lose(protocol, reason=ConnectionDone) -> None:
    """What the reactor does once a transport closed: tell the protocol."""
    protocol.connectionLost(Failure(reason()))


def at(host: str, port: int = 40000):
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


class LogCapture:
    """Every event logged during the test, and the text of those matching a phrase."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events = EventLoggingObserver.createWithCleanup(test, globalLogPublisher)

    def lines(self, phrase: str) -> list[str]:
        return [text for text in map(formatEvent, self.events) if phrase in text]

    def summaries(self) -> list[str]:
        return self.lines("more lines like this were left out")


# -- the cap per peer address ---------------------------------------------------------


class PerHostLimitTests(SynchronousTestCase):
    """C{max_connections_per_host}: one address cannot take every slot."""

    def setUp(self) -> None:
        limits = ServerLimits(max_connections_per_host=3, idle_timeout=0)
        self.factory = ServerHarness(limits=limits, policy=EVERYONE).factory
        self.log = LogCapture(self)

    def test_one_address_is_capped(self) -> None:
        """
        Past three connections from one address the next is refused with a busy line naming it,
        while another address still gets in.
        """
        for port in range(3):
            connect(self.factory, at("203.0.113.7", port))
        refusal, transport = connect(self.factory, STRANGER)
        self.assertIsInstance(refusal, Refusal)
        self.assertEqual(transport.value(), b"error: busy: too many connections from 203.0.113.7\0")
        self.assertTrue(transport.disconnecting)
        self.assertNotIsInstance(connect(self.factory, OTHER_STRANGER)[0], Refusal)
        self.assertEqual(len(self.factory.connections), 4)
        self.assertEqual(self.factory.refused, 1)
        [line] = self.log.lines("Refused a connection from 203.0.113.7")
        self.assertIn("--max-connections-per-host", line)

    def test_ipv4_mapped_address_is_the_same_host(self) -> None:
        """C{::ffff:203.0.113.7} counts as 203.0.113.7: an IPv6 listener cannot double the cap."""
        connect(self.factory, at("203.0.113.7", 1))
        connect(self.factory, at("::ffff:203.0.113.7", 2))
        connect(self.factory, at("203.0.113.7", 3))
        self.assertIsInstance(connect(self.factory, at("::ffff:203.0.113.7", 4))[0], Refusal)
        self.assertEqual(self.factory.connections_from("203.0.113.7"), 3)

    def test_leaving_makes_room(self) -> None:
        """When one of the capped connections closes, the address may connect again."""
        protocols = [connect(self.factory, at("203.0.113.7", port))[0] for port in range(3)]
        lose(protocols[0])
        self.assertEqual(self.factory.connections_from("203.0.113.7"), 2)
        self.assertNotIsInstance(connect(self.factory, STRANGER)[0], Refusal)
        for protocol in [*protocols[1:], *self.factory.connections]:
            lose(protocol)
        self.assertEqual(self.factory.connections_from("203.0.113.7"), 0)
        self.assertEqual(self.factory.connections, set())

    def test_local_clients_are_not_capped(self) -> None:
        """Loopback and unix socket clients (a local tunnel or proxy) count only toward the total."""
        for port in range(5):
            self.assertNotIsInstance(connect(self.factory, at("127.0.0.1", port))[0], Refusal)
            self.assertNotIsInstance(connect(self.factory, at("::1", port))[0], Refusal)
            self.assertNotIsInstance(connect(self.factory, UNIXAddress(None))[0], Refusal)
        self.assertEqual(len(self.factory.connections), 15)

    def test_refused_connections_do_not_count(self) -> None:
        """A refused connection takes no slot, and its close changes no count."""
        for port in range(3):
            connect(self.factory, at("203.0.113.7", port))
        refusal, _ = connect(self.factory, STRANGER)
        lose(refusal)
        self.assertEqual(self.factory.connections_from("203.0.113.7"), 3)
        self.assertEqual(len(self.factory.connections), 3)


# -- refusals: one line, cheap --------------------------------------------------------


class RefusalTests(SynchronousTestCase):
    """A refused client is told why in one message; a flood of refusals stays cheap."""

    def test_flood_of_refusals_costs_no_timer(self) -> None:
        """A thousand refusals each write one short message and close, leaving no timer behind."""
        harness = ServerHarness(limits=ServerLimits(idle_timeout=0))
        LogCapture(self)
        for port in range(1000):
            refusal, transport = connect(harness.factory, at("203.0.113.7", port))
            self.assertIsInstance(refusal, Refusal)
            self.assertEqual(
                replies(transport), [b"error: refused: 203.0.113.7 is not in the allowed networks"]
            )
            self.assertTrue(transport.disconnecting)
        self.assertEqual(harness.clock.getDelayedCalls(), [])
        self.assertEqual(harness.factory.refused, 1000)

    def test_busy_line_for_the_total_limit(self) -> None:
        """Past --max-connections, a client gets C{error: busy: too many connections}."""
        harness = ServerHarness(limits=ServerLimits(max_connections=1, idle_timeout=0))
        LogCapture(self)
        connect(harness.factory, LOOPBACK)
        _, transport = connect(harness.factory, LOOPBACK)
        self.assertEqual(transport.value(), b"error: busy: too many connections\0")

    def test_tls_refusal_is_closed_at_once(self) -> None:
        """On a TLS listener the refusal does no handshake: the connection is aborted, nothing sent."""
        harness = ServerHarness(limits=ServerLimits(idle_timeout=0))
        LogCapture(self)
        tls = TLSMemoryBIOFactory(server_options(), False, harness.factory, clock=harness.clock)
        protocol, transport = connect(tls, STRANGER)
        self.assertIsInstance(protocol.wrappedProtocol, Refusal)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")


# -- TLS: the handshake deadline --------------------------------------------------------


def server_options(client_ca: bool = True) -> CertificateOptions:
    """The test server certificate; with C{client_ca}, client certificates from the test CA required."""
    pki = make_pki()
    server = PrivateCertificate.loadPEM(pki.server.cert_pem + pki.server.key_pem)
    trust = {}
    if client_ca:
        trust["trustRoot"] = trustRootFromCertificates([Certificate.loadPEM(pki.ca.cert_pem)])
    return CertificateOptions(privateKey=server.privateKey.original, certificate=server.original, **trust)


def client_options(credential: Credential | None):
    """Options of a client trusting the test CA for C{localhost}, presenting C{credential}."""
    pki = make_pki()
    kwargs = {}
    if credential is not None:
        kwargs["clientCertificate"] = PrivateCertificate.loadPEM(credential.cert_pem + credential.key_pem)
    return optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pki.ca.cert_pem), **kwargs)


class Collecting(Protocol):
    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class HandshakeDeadlineTests(SynchronousTestCase):
    """A TLS client has C{handshake_timeout} seconds to finish the handshake, whatever else."""

    def setUp(self) -> None:
        limits = ServerLimits(handshake_timeout=5, idle_timeout=0, max_connections=2)
        self.harness = ServerHarness(limits=limits, policy=EVERYONE)
        self.tls = self.tls_factory(server_options())
        self.log = LogCapture(self)

    def tls_factory(self, options):
        return TLSMemoryBIOFactory(options, False, self.harness.factory, clock=self.harness.clock)

    def silent_peer(self, port: int):
        """A TCP peer of the TLS listener that never sends a ClientHello."""
        return connect(self.tls, at("203.0.113.7", port))

    def test_silent_peer_is_closed_at_the_deadline(self) -> None:
        """A peer sending nothing is aborted once the deadline passes, with --idle-timeout 0."""
        protocol, transport = self.silent_peer(1)
        self.harness.clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        self.harness.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        lose(protocol, ConnectionAborted)
        self.assertEqual(self.harness.factory.connections, set())
        [line] = self.log.lines("203.0.113.7")
        self.assertIn("no TLS handshake within 5 s (--handshake-timeout)", line)

    def test_trickling_peer_is_closed_at_the_deadline(self) -> None:
        """A peer sending a ClientHello one byte a second cannot stretch the deadline."""
        protocol, transport = self.silent_peer(1)
        protocol.dataReceived(b"\x16\x03\x01\x02\x00")  # a handshake record of 512 bytes...
        for _ in range(4):
            self.harness.clock.advance(1)
            protocol.dataReceived(b"\x01")  # ...that never ends
        self.assertFalse(transport.disconnected)
        self.harness.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_slots_held_by_silent_peers_come_back(self) -> None:
        """
        Two silent peers fill --max-connections 2: a third is refused; at the deadline both are
        closed, and a client that finishes its handshake is served after the deadline passed.
        """
        held = [self.silent_peer(port) for port in (1, 2)]
        refused, _ = self.silent_peer(3)
        self.assertIsInstance(refused.wrappedProtocol, Refusal)
        self.harness.clock.advance(5)
        for protocol, transport in held:
            self.assertTrue(transport.disconnected)
            lose(protocol, ConnectionAborted)
        client, server, pump = self.handshake(make_pki().client)
        self.assertTrue(server.wrappedProtocol.tls_established)
        self.harness.clock.advance(60)  # past the deadline: a finished handshake is not timed out
        client.write(b"go\0")
        pump.flush()  # (pumping also runs the clock's calls of 0 s: TLS writes are sent then)
        self.harness.finish_reads()
        pump.flush()
        self.assertEqual(client.wrappedProtocol.received, b"Button released\0")
        self.assertFalse(pump.serverIO.disconnecting)

    def handshake(self, credential: Credential | None):
        """A real TLS handshake in memory between a client with C{credential} and the server."""
        client_factory = TLSMemoryBIOFactory(
            client_options(credential), True, Factory.forProtocol(Collecting), clock=self.harness.clock
        )
        return iosim.connectedServerAndClient(
            lambda: self.tls.buildProtocol(STRANGER),
            lambda: client_factory.buildProtocol(STRANGER),
            clock=self.harness.clock,
        )

    def test_connected_line_waits_for_the_handshake(self) -> None:
        """A TLS client is logged as connected once it proved who it is, not at the TCP accept."""
        self.silent_peer(1)
        self.assertEqual(self.log.lines("connected from"), [])
        self.handshake(make_pki().client)
        self.assertEqual(len(self.log.lines("Client connected from")), 1)

    def test_failed_handshake_names_client_ca_only_when_it_is_set(self) -> None:
        """
        A client without a certificate is refused naming --client-ca; without --client-ca, a failed
        handshake says what else to check and does not name it.
        """
        self.handshake(None)
        [required] = self.log.lines("Refused")
        self.assertIn("--client-ca", required)
        self.assertIn("TLS error:", required)

        self.tls = self.tls_factory(server_options(client_ca=False))
        protocol, _ = self.silent_peer(2)
        protocol.dataReceived(b"go\0" * 4)  # a plain client on the ssl: listener
        lose(protocol)
        [plain] = [line for line in self.log.lines("Refused") if line != required]
        self.assertNotIn("--client-ca", plain)
        self.assertIn("plain TCP client", plain)


# -- the idle sweep ----------------------------------------------------------------------


class IdleTimeoutTests(SynchronousTestCase):
    """
    A connection silent for C{idle_timeout} seconds is closed after its work; an active one is
    kept. (It was a real-reactor case with a 0.5 s timeout.)
    """

    def assertSilentClosedActiveKept(self, harness, connect_one) -> None:
        log = LogCapture(self)
        silent, silent_transport = connect_one()
        active, active_transport = connect_one()
        for _ in range(6):
            harness.clock.advance(1)
            active.dataReceived(b"\0")  # an empty message: the peer speaks
        self.assertTrue(silent.closing)
        self.assertTrue(silent_transport.disconnecting)
        self.assertFalse(active_transport.disconnecting)
        self.assertEqual(len(log.lines("(--idle-timeout)")), 1)
        lose(silent)
        lose(active)
        self.assertEqual(harness.factory.connections, set())
        self.assertEqual(harness.clock.getDelayedCalls(), [])  # the sweep stopped with the last one

    def test_serve(self) -> None:
        harness = ServerHarness(limits=ServerLimits(idle_timeout=4))
        self.assertSilentClosedActiveKept(harness, harness.connect)

    def test_collect(self) -> None:
        harness = CollectorHarness(self, store=False, limits=ServerLimits(idle_timeout=4))
        self.assertSilentClosedActiveKept(harness, harness.connect)


class PausedByUsIsNotIdleTests(SynchronousTestCase):
    """A connection we stopped reading because our sensor or disk is slow is not idle."""

    def test_serve_waiting_for_a_slow_sensor(self) -> None:
        """
        With max_pending commands waiting for a read, the client is kept past --idle-timeout; its
        idle clock starts again when the replies go out.
        """
        harness = ServerHarness(limits=ServerLimits(idle_timeout=4, max_pending=2))
        protocol, transport = harness.connect()
        protocol.dataReceived(b"go\0go\0go\0")
        self.assertTrue(protocol.paused & Pause.PENDING)
        harness.clock.advance(8)  # two idle timeouts, the reads still under way
        self.assertFalse(protocol.closing)
        harness.finish_reads()
        harness.finish_reads()
        self.assertEqual(replies(transport), [b"Button released"] * 3)
        harness.clock.advance(3)
        self.assertFalse(protocol.closing)
        harness.clock.advance(2)
        self.assertTrue(protocol.closing)

    def test_collect_waiting_for_a_slow_disk(self) -> None:
        """A reporter paused while max_pending messages wait for the disk is kept."""
        harness = CollectorHarness(self, limits=ServerLimits(idle_timeout=4, max_pending=2))
        protocol, _ = harness.connect()
        protocol.dataReceived(b"one\0two\0")
        self.assertTrue(protocol.paused & Pause.PENDING)
        for _ in range(8):
            harness.clock.advance(1)  # the writes never finish
        self.assertFalse(protocol.closing)

    def test_client_that_does_not_read_is_idle(self) -> None:
        """
        A client whose replies fill the send buffer (paused for WRITES) and that sends nothing more
        is closed like a silent one, and aborted once the close grace passes without a flush.
        """
        harness = ServerHarness(limits=ServerLimits(idle_timeout=4))
        protocol, transport = harness.connect()
        protocol.pauseProducing()  # what the transport does when the client does not read
        harness.clock.advance(5)
        self.assertTrue(protocol.closing)
        harness.clock.advance(protocol.CLOSE_GRACE)
        self.assertTrue(transport.disconnected)


class SweeperFailureTests(SynchronousTestCase):
    """A sweep that raises is logged; sweeping goes on, and stopping it later raises nothing."""

    def test_failed_sweep_is_logged_and_sweeping_goes_on(self) -> None:
        log = LogCapture(self)
        harness = ServerHarness(limits=ServerLimits(idle_timeout=4))
        first, _ = harness.connect()
        second, _ = harness.connect()
        failures = []

        def break_once(connection) -> None:
            def timeout() -> None:
                if not failures:
                    failures.append(connection)
                    raise RuntimeError("a bug in one connection")
                type(connection).timeoutConnection(connection)

            connection.timeoutConnection = timeout

        break_once(first)
        break_once(second)
        for _ in range(8):
            harness.clock.advance(1)
        [error] = [e for e in log.events if e.get("log_level") == LogLevel.error]
        self.assertIn("a bug in one connection", error["log_failure"].getErrorMessage())
        self.assertTrue(first.closing and second.closing)
        self.flushLoggedErrors(RuntimeError)
        lose(first)
        lose(second)  # stopping the sweeper after the failure raises nothing
        self.assertEqual(harness.clock.getDelayedCalls(), [])


# -- the drain at stop -------------------------------------------------------------------


class DrainTests(SynchronousTestCase):
    """C{drain} fires when the last connection closes, or at its deadline; it does not poll."""

    def setUp(self) -> None:
        self.harness = ServerHarness(limits=ServerLimits(idle_timeout=0))

    def test_fires_when_the_last_connection_closes(self) -> None:
        """With no time passing at all, the drain fires on the last connectionLost."""
        idle, idle_transport = self.harness.connect()
        busy, busy_transport = self.harness.connect()
        busy.dataReceived(b"go\0")
        drained = self.harness.factory.drain(self.harness.clock, 10)
        self.assertTrue(idle_transport.disconnecting)
        lose(idle)
        self.assertNoResult(drained)
        self.harness.finish_reads()  # the read finishes; the clock does not move
        self.assertEqual(replies(busy_transport), [b"Button released"])
        self.assertTrue(busy_transport.disconnecting)
        self.assertNoResult(drained)
        lose(busy)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])

    def test_deadline_aborts_the_rest(self) -> None:
        """A connection whose work never ends is aborted at the deadline, and the drain fires."""
        busy, transport = self.harness.connect()
        busy.dataReceived(b"go\0")
        drained = self.harness.factory.drain(self.harness.clock, 3)
        self.harness.clock.advance(2.9)
        self.assertNoResult(drained)
        self.assertFalse(transport.disconnected)
        self.harness.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertIsNone(self.successResultOf(drained))

    def test_nothing_to_drain(self) -> None:
        self.assertIsNone(self.successResultOf(self.harness.factory.drain(self.harness.clock, 3)))


# -- floods and the log ----------------------------------------------------------------------


class FloodLogTests(SynchronousTestCase):
    """A flood of peers logs a bounded number of lines per kind, then one summary."""

    def setUp(self) -> None:
        self.log = LogCapture(self)

    def test_flood_of_connections(self) -> None:
        """500 connections opening and closing log 20 arrivals, 20 departures, then summaries."""
        harness = ServerHarness(limits=ServerLimits(idle_timeout=0))
        for _ in range(500):
            protocol, _ = harness.connect()
            lose(protocol)
        self.assertEqual(len(self.log.lines("connected from")), CONNECTION_LOG_BURST)
        self.assertEqual(len(self.log.lines("disconnected")), CONNECTION_LOG_BURST)
        harness.clock.advance(CONNECTION_LOG_WINDOW)
        lose(harness.connect()[0])
        summaries = self.log.summaries()
        self.assertEqual(len(summaries), 2, summaries)
        self.assertTrue(all(s.startswith("480 more lines") for s in summaries), summaries)

    def test_flood_of_invalid_utf8(self) -> None:
        """A thousand messages that are not UTF-8 log 20 warnings, then one summary of 980."""
        harness = ServerHarness(limits=ServerLimits(idle_timeout=0))
        protocol, transport = harness.connect()
        protocol.dataReceived(b"\xff\0" * 1000)
        self.assertEqual(len(replies(transport)), 1000)  # each still gets its error reply
        self.assertEqual(len(self.log.lines("Dropped a message")), CONNECTION_LOG_BURST)
        harness.clock.advance(CONNECTION_LOG_WINDOW)
        protocol.dataReceived(b"\xff\0")
        [summary] = self.log.summaries()
        self.assertTrue(summary.startswith("980 more lines"), summary)
        self.assertIn("not UTF-8", summary)

    def test_flood_of_failed_handshakes(self) -> None:
        """200 plain clients on a TLS listener log 20 refusals, then one summary."""
        harness = ServerHarness(limits=ServerLimits(idle_timeout=0), policy=EVERYONE)
        tls = TLSMemoryBIOFactory(
            server_options(client_ca=False), False, harness.factory, clock=harness.clock
        )
        for port in range(200):
            protocol, _ = connect(tls, at("203.0.113.7", port))
            protocol.dataReceived(b"go\0" * 4)
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.log.lines("the TLS handshake failed")), CONNECTION_LOG_BURST)
        harness.clock.advance(CONNECTION_LOG_WINDOW)
        harness.factory.peer_log.flush()
        [summary] = self.log.summaries()
        self.assertTrue(summary.startswith("180 more lines"), summary)

    def test_summaries_at_stop(self) -> None:
        """Stopping the role logs the summaries of what was left out, without waiting for a window."""
        from rpisensor.stopping import DrainService

        harness = ServerHarness(limits=ServerLimits(idle_timeout=0))
        for _ in range(30):
            lose(harness.connect()[0])
        self.assertEqual(self.log.summaries(), [])
        self.successResultOf(DrainService(harness.factory, harness.clock, 1).stopService())
        self.assertEqual(sorted(s.split(" in the last")[0] for s in self.log.summaries()), [
            "10 more lines like this were left out", "10 more lines like this were left out",
        ])  # fmt: skip


class HalfCloseDeclaredTests(SynchronousTestCase):
    def test_server_connections_are_half_closeable(self) -> None:
        """Both roles' connections declare IHalfCloseableProtocol, so TCP tells them of a FIN."""
        serve, _ = ServerHarness().connect()
        collect, _ = CollectorHarness(self, store=False).connect()
        self.assertTrue(IHalfCloseableProtocol.providedBy(serve))
        self.assertTrue(IHalfCloseableProtocol.providedBy(collect))
