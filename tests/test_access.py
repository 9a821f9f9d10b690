"""
Who may connect to a server role: L{rpisensor.net.access.AccessPolicy} on its own,
applied by the server factory to fake peers, and C{--allow} on a real
C{twistd} over loopback.

Only loopback addresses are used on the network; the other addresses appear
only as fake peers. Nothing asserts a duration.
"""

from __future__ import annotations

import ipaddress
import socket
from unittest import SkipTest

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.access import LOCAL_NETWORKS, AccessPolicy, parse_network
from rpisensor.net.admission import Refusal
from rpisensor.net.limits import ListenSettings, ServerLimits
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.pool import open_reader
from rpisensor.roles.serve.connection import SensorServerProtocol
from rpisensor.roles.serve.service import SensorServerFactory
from rpisensor.app.tap import Options
from rpisensor.testing import simulated_pins
from tests.certs import escape, write_pki
from tests.processes import FOREGROUND, Twistd, connect_tcp, request, run_twistd
from tests.support import LOOPBACK

RELEASED = b"Button released\0"
#: What a client at 127.0.0.1 gets when its network is not allowed.
REFUSED_LOOPBACK = b"error: refused: 127.0.0.1 is not in the allowed networks\0"

#: Loopback, private and link-local addresses: the default policy lets them in.
LOCAL_HOSTS = (
    "127.0.0.1", "10.1.2.3", "172.16.5.5", "192.168.1.9", "169.254.1.1",
    "::1", "fe80::1", "fd00::1", "::ffff:192.168.1.2",
)  # fmt: skip
#: Public addresses (and 172.32.0.1, just past 172.16.0.0/12): refused by default.
PUBLIC_HOSTS = ("8.8.8.8", "203.0.113.7", "2001:db8::1", "172.32.0.1")
#: Not IP addresses at all.
GARBAGE_HOSTS = ("", "nonsense", "localhost", "999.1.1.1", "10.0.0", "::g", "10.0.0.0/8")


class DefaultPolicyTests(SynchronousTestCase):
    """C{AccessPolicy()}: loopback, private and link-local networks only."""

    def test_local_addresses_allowed(self) -> None:
        """Every loopback, private and link-local address, IPv4 or IPv6, is allowed."""
        policy = AccessPolicy()
        refused = [host for host in LOCAL_HOSTS if not policy.allows(host)]
        self.assertEqual(refused, [])

    def test_public_addresses_refused(self) -> None:
        """Public addresses, and 172.32.0.1 just outside 172.16.0.0/12, are refused."""
        policy = AccessPolicy()
        allowed = [host for host in PUBLIC_HOSTS if policy.allows(host)]
        self.assertEqual(allowed, [])

    def test_ipv4_mapped_public_refused(self) -> None:
        """An IPv4-mapped IPv6 address is judged by its IPv4 address: ::ffff:8.8.8.8 is refused."""
        self.assertFalse(AccessPolicy().allows("::ffff:8.8.8.8"))

    def test_scoped_link_local_allowed(self) -> None:
        """A link-local IPv6 address with a zone (fe80::1%eth0) is allowed."""
        self.assertTrue(AccessPolicy().allows("fe80::1%eth0"))

    def test_garbage_refused(self) -> None:
        """A host that is not an IP address is refused, never an error."""
        policy = AccessPolicy()
        allowed = [host for host in GARBAGE_HOSTS if policy.allows(host)]
        self.assertEqual(allowed, [])

    def test_describe_says_default(self) -> None:
        """The default policy describes itself as the default local networks."""
        policy = AccessPolicy()
        self.assertTrue(policy.default)
        self.assertEqual(policy.networks, LOCAL_NETWORKS)
        self.assertIn("default", policy.describe())


class ExplicitPolicyTests(SynchronousTestCase):
    """C{AccessPolicy(networks)}: those networks only; an empty list lets everyone in."""

    def test_only_listed_networks(self) -> None:
        """
        With 192.168.0.0/24 listed, 192.168.0.5 is allowed and loopback and 192.168.1.5 are not.
        """
        policy = AccessPolicy([parse_network("192.168.0.0/24")])
        self.assertTrue(policy.allows("192.168.0.5"))
        self.assertFalse(policy.allows("192.168.1.5"))
        self.assertFalse(policy.allows("127.0.0.1"))
        self.assertFalse(policy.allows("::1"))

    def test_one_host(self) -> None:
        """A bare address allows exactly that host, also as an IPv4-mapped IPv6 address."""
        policy = AccessPolicy([parse_network("203.0.113.7")])
        self.assertTrue(policy.allows("203.0.113.7"))
        self.assertTrue(policy.allows("::ffff:203.0.113.7"))
        self.assertFalse(policy.allows("203.0.113.8"))

    def test_ipv6_network(self) -> None:
        """2001:db8::/32 allows 2001:db8::1 and refuses 2001:db9::1 and IPv4 addresses."""
        policy = AccessPolicy([parse_network("2001:db8::/32")])
        self.assertTrue(policy.allows("2001:db8::1"))
        self.assertFalse(policy.allows("2001:db9::1"))
        self.assertFalse(policy.allows("127.0.0.1"))

    def test_several_networks(self) -> None:
        """With two networks listed, an address in either is allowed."""
        policy = AccessPolicy([parse_network("10.0.0.0/8"), parse_network("203.0.113.0/24")])
        self.assertEqual(
            [policy.allows(h) for h in ("10.9.9.9", "203.0.113.200", "192.168.1.1")],
            [True, True, False],
        )

    def test_garbage_refused(self) -> None:
        """With an explicit list too, a host that is not an IP address is refused."""
        policy = AccessPolicy([parse_network("0.0.0.0/0"), parse_network("::/0")])
        self.assertTrue(policy.allows("8.8.8.8"))
        allowed = [host for host in GARBAGE_HOSTS if policy.allows(host)]
        self.assertEqual(allowed, [])

    def test_describe_lists_networks(self) -> None:
        """An explicit policy describes itself by its networks."""
        policy = AccessPolicy([parse_network("10.0.0.0/8"), parse_network("2001:db8::/32")])
        self.assertFalse(policy.default)
        self.assertEqual(policy.describe(), "10.0.0.0/8, 2001:db8::/32")

    def test_empty_list_allows_everyone(self) -> None:
        """An empty list allows every address, public ones included."""
        policy = AccessPolicy([])
        self.assertTrue(policy.everyone)
        allowed = [host for host in (*LOCAL_HOSTS, *PUBLIC_HOSTS) if policy.allows(host)]
        self.assertEqual(allowed, [*LOCAL_HOSTS, *PUBLIC_HOSTS])
        self.assertEqual(policy.describe(), "any address")


class ParseNetworkTests(SynchronousTestCase):
    """C{parse_network(text)}: the text of one C{--allow}."""

    def test_network(self) -> None:
        """C{192.168.0.0/24} is that IPv4 network."""
        self.assertEqual(parse_network("192.168.0.0/24"), ipaddress.ip_network("192.168.0.0/24"))

    def test_host(self) -> None:
        """A bare address is a one-address network (/32, /128)."""
        self.assertEqual(parse_network("203.0.113.7").prefixlen, 32)
        self.assertEqual(parse_network("2001:db8::1").prefixlen, 128)

    def test_host_bits_ignored(self) -> None:
        """C{10.1.2.3/8} (host bits set) means 10.0.0.0/8, not an error."""
        self.assertEqual(parse_network("10.1.2.3/8"), ipaddress.ip_network("10.0.0.0/8"))

    def test_spaces_stripped(self) -> None:
        """Spaces around the text are ignored."""
        self.assertEqual(parse_network("  10.0.0.0/8 "), ipaddress.ip_network("10.0.0.0/8"))

    def test_errors(self) -> None:
        """Text that is no network raises ValueError quoting it and showing an example."""
        bad = ("nonsense", "", "10.0.0.0/33", "1.2.3", "::g", "192.168.0.0/24/8", "localhost")
        for text in bad:
            with self.subTest(text=text):
                with self.assertRaises(ValueError) as raised:
                    parse_network(text)
                message = str(raised.exception)
                self.assertIn(repr(text), message)
                self.assertIn("192.168.0.0/24", message)


class FuzzTests(SynchronousTestCase):
    """Any text as a peer's host or an C{--allow} value: an answer or a clear error, never a crash."""

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=50), st.ip_addresses().map(str)))
    def test_any_host(self, host: str) -> None:
        """Every policy answers True or False for any host text."""
        for policy in (AccessPolicy(), AccessPolicy([parse_network("10.0.0.0/8")]), AccessPolicy([])):
            self.assertIn(policy.allows(host), (True, False))

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=50), st.ip_addresses().map(str), st.ip_addresses().map(lambda a: f"{a}/24")))
    def test_any_allow_value(self, text: str) -> None:
        """C{--allow TEXT} gives a network, or a ValueError that quotes the text."""
        try:
            network = parse_network(text)
        except ValueError as e:
            self.assertIn(repr(text), str(e))
        else:
            self.assertIsInstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network))

    @given(st.ip_addresses(v=4))
    def test_mapped_addresses_judged_as_ipv4(self, address) -> None:
        """C{::ffff:A} is allowed exactly when C{A} is."""
        policy = AccessPolicy()
        self.assertEqual(policy.allows(f"::ffff:{address}"), policy.allows(str(address)))


class OptionsPolicyTests(SynchronousTestCase):
    """The policy C{serve}'s options choose from C{--allow} and C{--client-ca}."""

    def policy(self, *options: str) -> AccessPolicy:
        """The access policy of C{twistd rpisensor serve --gpio sim OPTIONS}."""
        parsed = Options()
        parsed.parseOptions(["serve", "--gpio", "sim", *options])
        return parsed.subOptions.listen_settings().policy

    def mutual_tls_options(self) -> list[str]:
        """C{--client-ca} and an C{ssl:} listener, with certificates made for this test."""
        pki = write_pki(self.mktemp())
        key, cert = escape(pki.server_key), escape(pki.server_cert)
        return [
            "--client-ca", pki.ca_cert,
            "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        ]  # fmt: skip

    def test_default(self) -> None:
        """Without C{--allow}, the default local networks apply."""
        self.assertTrue(self.policy("--listen", "tcp:0:interface=127.0.0.1").default)

    def test_allow_repeated(self) -> None:
        """Each C{--allow} adds a network, and only those are allowed."""
        policy = self.policy("--allow", "10.0.0.0/8", "--allow", "2001:db8::1")
        expected = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::1/128"))
        self.assertEqual(policy.networks, expected)
        self.assertFalse(policy.allows("127.0.0.1"))

    def test_client_ca_allows_any_address(self) -> None:
        """
        With C{--client-ca} and no C{--allow}, the certificate is the credential: any address may
        connect.
        """
        policy = self.policy(*self.mutual_tls_options())
        self.assertTrue(policy.everyone)
        self.assertTrue(policy.allows("203.0.113.7"))

    def test_client_ca_with_allow(self) -> None:
        """
        With C{--client-ca} and C{--allow}, only the listed networks may connect, certificate or
        not.
        """
        policy = self.policy(*self.mutual_tls_options(), "--allow", "192.168.0.0/24")
        self.assertFalse(policy.everyone)
        self.assertTrue(policy.allows("192.168.0.9"))
        self.assertFalse(policy.allows("203.0.113.7"))


def make_factory(**options) -> SensorServerFactory:
    """A server factory over simulated pins; its read pool is never started."""
    reader, _ = open_reader(Clock(), simulated_pins(), [DEFAULT_INPUT])
    return SensorServerFactory(reader, ListenSettings(**options))


#: No idle timer, so no delayed call is left in the global reactor.
NO_IDLE_TIMEOUT = ServerLimits(idle_timeout=0)


class RefusalAssertions:
    def assertRefusedWith(self, factory, address, reply: str) -> None:
        """
        C{factory} refuses a peer at C{address}: what it builds sends the one message
        C{reply}, then closes, and does not count as a connection.
        """
        open_before = len(factory.connections)
        protocol = factory.buildProtocol(address)
        self.assertIsInstance(protocol, Refusal)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), reply.encode() + b"\0")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(factory.connections), open_before)


class FactoryPolicyTests(RefusalAssertions, SynchronousTestCase):
    """The server factory applies its policy and connection limit in C{buildProtocol}."""

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def warnings(self) -> list[str]:
        """The text of every warning logged so far."""
        return [formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.warn]

    def test_public_peer_refused_and_logged(self) -> None:
        """A peer at 203.0.113.7 gets no protocol, and one warning names it and C{--allow}."""
        factory = make_factory(limits=NO_IDLE_TIMEOUT)
        self.assertRefusedWith(
            factory, IPv4Address("TCP", "203.0.113.7", 5000),
            "error: refused: 203.0.113.7 is not in the allowed networks",
        )  # fmt: skip
        self.assertEqual(factory.refused, 1)
        [warning] = self.warnings()
        self.assertIn("203.0.113.7", warning)
        self.assertIn("--allow", warning)

    def test_public_ipv6_peer_refused(self) -> None:
        """A peer at 2001:db8::1 gets no protocol, and the warning names it."""
        factory = make_factory(limits=NO_IDLE_TIMEOUT)
        self.assertRefusedWith(
            factory, IPv6Address("TCP", "2001:db8::1", 5000),
            "error: refused: 2001:db8::1 is not in the allowed networks",
        )  # fmt: skip
        [warning] = self.warnings()
        self.assertIn("2001:db8::1", warning)

    def test_local_peer_gets_protocol(self) -> None:
        """
        Peers at 192.168.1.9 and ::1 get a server protocol, and nothing is logged as a warning.
        """
        factory = make_factory(limits=NO_IDLE_TIMEOUT)
        for address in (IPv4Address("TCP", "192.168.1.9", 5000), IPv6Address("TCP", "::1", 5000)):
            protocol = factory.buildProtocol(address)
            self.assertIsInstance(protocol, SensorServerProtocol)
            self.assertIs(protocol.factory, factory)
        self.assertEqual(self.warnings(), [])
        self.assertEqual(factory.refused, 0)

    def test_explicit_policy(self) -> None:
        """With C{--allow 10.0.0.0/8}, 10.1.2.3 is served and loopback is refused."""
        factory = make_factory(
            limits=NO_IDLE_TIMEOUT, policy=AccessPolicy([parse_network("10.0.0.0/8")])
        )
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", 5000)))
        self.assertRefusedWith(
            factory, IPv4Address("TCP", "127.0.0.1", 5000),
            "error: refused: 127.0.0.1 is not in the allowed networks",
        )  # fmt: skip
        [warning] = self.warnings()
        self.assertIn("127.0.0.1", warning)
        self.assertIn("10.0.0.0/8", warning)

    def test_unix_peers_allowed(self) -> None:
        """Unix socket peers, named or not, are allowed even by a policy of one remote network."""
        factory = make_factory(
            limits=NO_IDLE_TIMEOUT, policy=AccessPolicy([parse_network("203.0.113.0/24")])
        )
        for address in (UNIXAddress(b"/run/rpisensor.sock"), UNIXAddress(None)):
            self.assertIsInstance(factory.buildProtocol(address), SensorServerProtocol)
        self.assertEqual(self.warnings(), [])

    def connect(self, factory: SensorServerFactory, host: str, port: int) -> SensorServerProtocol:
        """Build a protocol for C{host:port} and connect it to a StringTransport."""
        address = IPv4Address("TCP", host, port)
        protocol = factory.buildProtocol(address)
        self.assertIsNotNone(protocol, f"{host}:{port} was refused")
        protocol.makeConnection(StringTransport(peerAddress=address))
        return protocol

    def test_max_connections(self) -> None:
        """
        With two connections open (the limit), a third is refused and logged; after one closes, one
        more is accepted.
        """
        limits = ServerLimits(max_connections=2, idle_timeout=0)
        factory = make_factory(limits=limits)
        first = self.connect(factory, "127.0.0.1", 5001)
        self.connect(factory, "127.0.0.1", 5002)
        self.assertEqual(len(factory.connections), 2)

        self.assertRefusedWith(
            factory, IPv4Address("TCP", "127.0.0.1", 5003), "error: busy: too many connections"
        )
        self.assertEqual(factory.refused, 1)
        [warning] = self.warnings()
        self.assertIn("127.0.0.1", warning)
        self.assertIn("--max-connections", warning)

        first.transport.loseConnection()
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(factory.connections), 1)
        self.connect(factory, "127.0.0.1", 5004)
        self.assertEqual(len(factory.connections), 2)

    def test_max_connections_unix_peer(self) -> None:
        """A unix socket peer beyond the limit is refused too, and the warning says it is local."""
        factory = make_factory(limits=ServerLimits(max_connections=1, idle_timeout=0))
        self.connect(factory, "127.0.0.1", 5001)
        self.assertRefusedWith(factory, UNIXAddress(None), "error: busy: too many connections")
        [warning] = self.warnings()
        self.assertIn("a local client", warning)


class AllowOverLoopbackTests(SynchronousTestCase):
    """C{twistd rpisensor serve --allow ...} with real loopback clients."""

    def start_serve(self, *allow: str) -> tuple[Twistd, int]:
        """
        Start C{serve --gpio sim} on 127.0.0.1 with C{--allow} options; return it and its port.
        """
        options = [arg for network in allow for arg in ("--allow", network)]
        twistd = Twistd("rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK, *options)
        self.addCleanup(twistd.close)
        return twistd, twistd.wait_port(LOOPBACK)

    def test_loopback_refused_when_not_allowed(self) -> None:
        """
        With only 10.0.0.0/8 allowed, a client from 127.0.0.1 gets one error line instead of a reply
        and is closed, and the log says why.
        """
        twistd, port = self.start_serve("10.0.0.0/8")
        self.assertEqual(go_reply_or_nothing(port), REFUSED_LOOPBACK)
        line = twistd.wait_for(r"Refused a connection from 127\.0\.0\.1\b.*").group(0)
        self.assertIn("--allow", line)
        self.assertIn("10.0.0.0/8", line)
        log = twistd.stop_cleanly()
        self.assertNotIn("Client connected from", log)

    def test_loopback_served_when_allowed(self) -> None:
        """With 127.0.0.1 allowed, a client from 127.0.0.1 gets C{Button released}."""
        twistd, port = self.start_serve("127.0.0.1")
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
        log = twistd.stop_cleanly()
        self.assertNotIn("Refused", log)

    def test_default_serves_loopback(self) -> None:
        """Without C{--allow}, loopback is in the default networks and is served."""
        twistd, port = self.start_serve()
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
        self.assertNotIn("Refused", twistd.stop_cleanly())

    def test_refused_client_leaves_server_serving(self) -> None:
        """
        With only 127.0.0.2 allowed, a client from 127.0.0.1 is refused and then one from 127.0.0.2
        is served.
        """
        twistd, port = self.start_serve("127.0.0.2")
        self.assertEqual(go_reply_or_nothing(port), REFUSED_LOOPBACK)
        twistd.wait_for(r"Refused a connection from 127\.0\.0\.1\b")
        try:
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=30, source_address=("127.0.0.2", 0)
            )
        except OSError as e:  # pragma: no cover - a loopback without 127.0.0.0/8
            raise SkipTest(f"cannot connect from 127.0.0.2 here: {e}") from None
        with sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
        log = twistd.stop_cleanly()
        self.assertIn("Client connected from 127.0.0.2:", log)
        self.assertEqual(log.count("Refused a connection"), 1, log)

    def assertUsageError(self, exited, option: str, detail: str) -> None:
        """Exited non-zero, without a traceback, last line naming C{option} and C{detail}."""
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        last = exited.log.strip().splitlines()[-1]
        self.assertIn(option, last, exited.log)
        self.assertIn(detail, last, exited.log)

    def test_allow_nonsense_is_usage_error(self) -> None:
        """C{--allow nonsense} stops twistd at once with a message naming C{--allow}."""
        exited = run_twistd(
            *FOREGROUND, "rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK,
            "--allow", "nonsense",
        )  # fmt: skip
        self.assertUsageError(exited, "--allow", "nonsense")

    def test_allow_bad_prefix_is_usage_error(self) -> None:
        """C{--allow 10.0.0.0/33} stops twistd at once with a message naming C{--allow}."""
        exited = run_twistd(
            *FOREGROUND, "rpisensor", "serve", "--gpio", "sim", "--listen", LOOPBACK,
            "--allow", "10.0.0.0/33",
        )  # fmt: skip
        self.assertUsageError(exited, "--allow", "10.0.0.0/33")



class RefusalLogFloodTests(SynchronousTestCase):
    def test_flood_of_refusals_is_summarised(self):
        """Past five refusals in ten seconds, refusals are counted and the count logged once."""
        from rpisensor.roles.collect.collector import CollectorFactory

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        factory = CollectorFactory(None, clock, wall=clock.seconds)
        for port in range(20):
            self.assertIsInstance(
                factory.buildProtocol(IPv4Address("TCP", "203.0.113.7", 5000 + port)), Refusal
            )
        self.assertEqual(len([e for e in events if e.get("host") == "203.0.113.7"]), 5)
        clock.advance(10)
        factory.buildProtocol(IPv4Address("TCP", "203.0.113.7", 6000))
        summaries = [e for e in events if "count" in e and "seconds" in e]
        self.assertEqual([e["count"] for e in summaries], [15])
        self.assertEqual(factory.refused, 21)


def go_reply_or_nothing(port: int) -> bytes:
    """
    Send C{go} from 127.0.0.1 and read until the server closes; what came back
    (a reset after the reply counts as the end).
    """
    with connect_tcp(port) as sock:
        received = b""
        try:
            sock.sendall(b"go\0")
            while block := sock.recv(4096):
                received += block
        except (ConnectionResetError, BrokenPipeError):
            pass
        return received
