"""
L{rpisensor.net.tls} and the listen options around it: endpoint strings
split as Twisted splits them, C{ssl:} listeners rebuilt for mutual TLS from
every parameter the string gives and every CA of the C{--client-ca} file
(checked with real TLS handshakes in memory), endpoint types in any case,
and the new limits on the command line.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.internet.endpoints import SSL4ServerEndpoint, _parse, quoteStringArgument
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import DiffieHellmanParameters
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.app.tap import Options
from rpisensor.net.limits import ServerLimits
from rpisensor.net.tls import (
    load_certificate_authorities,
    mutual_tls_endpoint,
    mutual_tls_options,
    parse_description,
    with_lower_case_type,
)
from tests.certs import escape, make_pki, write_pki
from tests.test_admission import client_options


class ParseDescriptionTests(SynchronousTestCase):
    """L{parse_description} splits endpoint strings exactly as Twisted does."""

    @settings(max_examples=500, deadline=None)
    @given(st.text(st.sampled_from(":=\\ab1é"), max_size=30))
    def test_agrees_with_twisted(self, description: str) -> None:
        """Any string Twisted's own (private) parser takes splits the same way here."""
        try:
            expected = _parse(description)
        except RuntimeError:  # Twisted's parser on a trailing lone backslash
            self.assertRaises(ValueError, parse_description, description)
            return
        except UnicodeError:
            return  # Twisted takes only ASCII names; no parameter of ours has another
        self.assertEqual(parse_description(description), expected)

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1),
            st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))),
            max_size=5,
        )
    )
    def test_quoted_values_come_back(self, parameters: dict[str, str]) -> None:
        """Names and values quoted with Twisted's quoteStringArgument come back unchanged."""
        text = "ssl:443" + "".join(
            f":{quoteStringArgument(k).replace('=', chr(92) + '=')}={quoteStringArgument(v)}"
            for k, v in parameters.items()
        )
        self.assertEqual(parse_description(text), (["ssl", "443"], parameters))

    def test_trailing_backslash(self) -> None:
        with self.assertRaises(ValueError) as raised:
            parse_description("ssl:443:privateKey=key\\")
        self.assertIn("lone backslash", str(raised.exception))

    def test_lower_case_type(self) -> None:
        """Only the type changes case: C{UNIX:/Run/X} becomes C{unix:/Run/X}."""
        self.assertEqual(with_lower_case_type("UNIX:/Run/X"), "unix:/Run/X")
        self.assertEqual(with_lower_case_type("SsL:443:privateKey=K.pem"), "ssl:443:privateKey=K.pem")
        self.assertEqual(with_lower_case_type("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0")


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Received(Protocol):
    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class MutualTLSEndpointTests(SynchronousTestCase):
    """L{mutual_tls_endpoint}: an C{ssl:} string plus the CAs whose clients may connect."""

    def setUp(self) -> None:
        self.pki = write_pki(self.mktemp())
        self.pem = make_pki()

    def ssl(self, *parameters: str) -> str:
        key, cert = escape(self.pki.server_key), escape(self.pki.server_cert)
        return ":".join(["ssl:0", f"privateKey={key}", f"certKey={cert}", *parameters])

    def options(self, description: str, ca_pem: bytes):
        """The certificate options the endpoint for C{description} uses."""
        return mutual_tls_options(description, ca_pem)

    def handshake(self, options, credential) -> bytes:
        """Echo through a real handshake in memory: what a client with C{credential} gets back."""
        clock = Clock()
        server = TLSMemoryBIOFactory(options, False, Factory.forProtocol(Echo), clock=clock)
        received = Received()
        client = TLSMemoryBIOFactory(
            client_options(credential), True, Factory.forProtocol(lambda: received), clock=clock
        )
        c, _, pump = iosim.connectedServerAndClient(
            lambda: server.buildProtocol(None), lambda: client.buildProtocol(None), clock=clock
        )
        c.write(b"hello")
        for _ in range(3):
            pump.flush()
        return received.received

    def test_endpoint(self) -> None:
        """An C{SSL4ServerEndpoint}, from Twisted's public API."""
        endpoint = mutual_tls_endpoint(MemoryReactorClock(), self.ssl(), self.pem.ca.cert_pem)
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)

    def test_every_ca_of_the_bundle_is_trusted(self) -> None:
        """With two CAs in the file, clients of the second are let in too; others are not."""
        bundle = self.pem.other_ca.cert_pem + self.pem.ca.cert_pem
        options = self.options(self.ssl(), bundle)
        self.assertEqual(self.handshake(options, self.pem.client), b"hello")
        self.assertEqual(self.handshake(options, self.pem.other_client), b"hello")
        only_other = self.options(self.ssl(), self.pem.other_ca.cert_pem)
        self.assertEqual(self.handshake(only_other, self.pem.client), b"")
        self.assertEqual(self.handshake(options, None), b"")  # no certificate at all

    def test_client_certificate_is_required(self) -> None:
        context = self.options(self.ssl(), self.pem.ca.cert_pem).getContext()
        self.assertTrue(context.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)

    def test_parameters_are_kept(self) -> None:
        """extraCertChain, dhParameters and sslmethod of the ssl: string reach the options."""
        dh_path = os.path.join(self.pki.directory, "dh.pem")
        description = self.ssl(
            f"extraCertChain={escape(self.pki.ca_cert)}",
            f"dhParameters={escape(dh_path)}",
            "sslmethod=TLS_METHOD",
        )
        options = self.options(description, self.pem.ca.cert_pem)
        self.assertEqual(
            [c.digest("sha256") for c in options.extraCertChain],
            [c.original.digest("sha256") for c in load_certificate_authorities(self.pem.ca.cert_pem)],
        )
        self.assertIsInstance(options.dhParameters, DiffieHellmanParameters)
        self.assertEqual(options.method, SSL.TLS_METHOD)

    def test_positional_parameters_and_one_file(self) -> None:
        """
        As with Twisted, C{ssl:PORT:KEYFILE} takes the key (and the certificate, when certKey is
        not given) from one file.
        """
        both = os.path.join(self.pki.directory, "both.pem")
        with open(both, "wb") as f:
            f.write(self.pem.server.cert_pem + self.pem.server.key_pem)
        options = self.options(f"ssl:0:{escape(both)}", self.pem.ca.cert_pem)
        self.assertEqual(self.handshake(options, self.pem.client), b"hello")

    def assertRefused(self, description: str, *fragments: str) -> None:
        with self.assertRaises(ValueError) as raised:
            mutual_tls_endpoint(MemoryReactorClock(), description, self.pem.ca.cert_pem)
        for fragment in fragments:
            self.assertIn(fragment, str(raised.exception))

    def test_mistakes(self) -> None:
        """Each mistake is a ValueError saying what is wrong."""
        self.assertRefused(self.ssl("ciphers=ALL"), "no parameter 'ciphers'")
        self.assertRefused(self.ssl("sslmethod=NONSENSE"), "sslmethod=NONSENSE")
        self.assertRefused("ssl:privateKey=k.pem", "needs a port")
        self.assertRefused("ssl:http", "port must be a number")
        self.assertRefused("tcp:0", "only be required on ssl:")
        self.assertRefused(self.ssl().replace(escape(self.pki.server_key), "missing.pem"), "missing.pem")
        self.assertRefused(self.ssl("port=1"), "port is given twice")

    def test_ca_file_without_certificates(self) -> None:
        with self.assertRaises(ValueError) as raised:
            load_certificate_authorities(self.pem.client.key_pem)
        self.assertIn("no PEM certificate", str(raised.exception))

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes_as_a_ca_file(self, data: bytes) -> None:
        """Whatever the file holds, reading it gives certificates or a ValueError, nothing else."""
        try:
            load_certificate_authorities(b"-----BEGIN CERTIFICATE-----\n" + data)
        except ValueError:
            pass


class ListenOptionsTests(SynchronousTestCase):
    """The command line of the server roles."""

    def serve(self, *options: str):
        parsed = Options()
        parsed.parseOptions(["serve", "--gpio", "sim", *options])
        return parsed.subOptions

    def assertUsageError(self, options, *fragments: str) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            self.serve(*options)
        for fragment in fragments:
            self.assertIn(fragment, str(raised.exception))

    def test_new_limits(self) -> None:
        """--max-connections-per-host and --handshake-timeout reach ServerLimits; defaults kept."""
        limits = (
            self.serve("--max-connections-per-host", "5", "--handshake-timeout", "2.5")
            .listen_settings()
            .limits
        )
        self.assertEqual((limits.max_connections_per_host, limits.handshake_timeout), (5, 2.5))
        defaults = self.serve().listen_settings().limits
        self.assertEqual(
            (defaults.max_connections_per_host, defaults.handshake_timeout),
            (ServerLimits.max_connections_per_host, ServerLimits.handshake_timeout),
        )

    def test_bad_limits(self) -> None:
        self.assertUsageError(["--max-connections-per-host", "0"], "--max-connections-per-host")
        self.assertUsageError(["--handshake-timeout", "0"], "--handshake-timeout")
        self.assertUsageError(["--handshake-timeout", "soon"], "--handshake-timeout")

    def test_limits_shown_in_help(self) -> None:
        """Each new option is in --help with its default."""
        text = self.serve().getUsage()
        self.assertIn("--max-connections-per-host=", text)
        self.assertIn(f"[default: {ServerLimits.max_connections_per_host}]", text)
        self.assertIn("--handshake-timeout=", text)

    def test_endpoint_types_in_any_case(self) -> None:
        """C{TCP:} and C{UNIX:} are taken, as tcp: and unix:."""
        listen = self.serve("--listen", "TCP:0:interface=127.0.0.1", "--listen", "UNIX:x.sock")["listen"]
        self.assertEqual(listen, ["tcp:0:interface=127.0.0.1", "unix:x.sock"])

    def mutual(self, *extra: str, listen: str | None = None, ca: str | None = None):
        pki = write_pki(self.mktemp())
        if listen is None:
            listen = f"SSL:0:privateKey={escape(pki.server_key)}:certKey={escape(pki.server_cert)}"
        return self.serve("--client-ca", ca or pki.ca_cert, "--listen", listen, *extra), pki

    def test_client_ca_with_upper_case_types(self) -> None:
        """With --client-ca, C{SSL:} and C{UNIX:} listeners are accepted."""
        options, _ = self.mutual("--listen", "UNIX:x.sock")
        self.assertEqual([d.split(":")[0] for d in options["listen"]], ["ssl", "unix"])

    def test_client_ca_refuses_tcp_in_any_case(self) -> None:
        self.assertUsageError(["--client-ca", write_pki(self.mktemp()).ca_cert, "--listen", "TCP:0"], "tcp:0")

    def test_client_ca_bad_ssl_parameter(self) -> None:
        """A mistake in an ssl: listener rebuilt for --client-ca is a usage error naming it."""
        with self.assertRaises(usage.UsageError) as raised:
            self.mutual(listen="ssl:0:privateKey=missing-key.pem")
        self.assertIn("missing-key.pem", str(raised.exception))

    def test_client_ca_bundle(self) -> None:
        """A --client-ca file of two CAs is read whole."""
        pki = write_pki(self.mktemp())
        bundle = os.path.join(pki.directory, "bundle.pem")
        with open(bundle, "wb") as out:
            for path in (pki.other_ca_cert, pki.ca_cert):
                with open(path, "rb") as f:
                    out.write(f.read())
        options, _ = self.mutual(ca=bundle)
        self.assertEqual(len(load_certificate_authorities(options["client-ca"])), 2)
