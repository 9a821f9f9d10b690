"""
L{rpisensor.net.peers}: how log lines name a peer's address and say why a
connection ended, in plain words.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.internet import error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.peers import ip_of, plain_reason

#: What Twisted's own texts say, that users should not have to read.
JARGON = ("non-clean fashion", "ITCPTransport", "abortConnection", "[(", "SSL routines")


class PlainReasonTests(SynchronousTestCase):
    def assertPlain(self, reason, *expected: str) -> str:
        text = plain_reason(reason)
        for fragment in expected:
            self.assertIn(fragment, text)
        for jargon in JARGON:
            self.assertNotIn(jargon, text)
        return text

    def test_twisted_reasons(self) -> None:
        """Twisted's connection ends, said without its class and method names."""
        self.assertPlain(Failure(error.ConnectionDone()), "closed by the other end")
        self.assertPlain(Failure(error.ConnectionLost()), "broke")
        self.assertPlain(Failure(error.ConnectionAborted()), "closed by this program")
        self.assertPlain(error.ConnectionRefusedError(), "refused")
        self.assertPlain(error.TimeoutError(), "timed out")

    def test_openssl_reasons(self) -> None:
        """OpenSSL's list of (library, function, reason) becomes its reasons."""
        failure = Failure(SSL.Error([("SSL routines", "", "peer did not return a certificate")]))
        self.assertEqual(self.assertPlain(failure), "TLS error: peer did not return a certificate")
        self.assertPlain(SSL.SysCallError(-1, "Unexpected EOF"), "TLS error: Unexpected EOF")
        self.assertPlain(SSL.Error(), "TLS error")

    def test_other_errors_keep_their_text(self) -> None:
        self.assertEqual(plain_reason(OSError("disk on fire")), "disk on fire")
        self.assertEqual(plain_reason(ValueError()), "ValueError")


class IPOfTests(SynchronousTestCase):
    def test_one_machine_one_address(self) -> None:
        """IPv4-mapped IPv6 addresses and zones give the address a per-host count uses."""
        self.assertEqual(ip_of("::ffff:203.0.113.7"), ipaddress.ip_address("203.0.113.7"))
        self.assertEqual(ip_of("fe80::1%eth0"), ipaddress.ip_address("fe80::1"))
        self.assertEqual(ip_of("2001:DB8::1"), ipaddress.ip_address("2001:db8::1"))
        self.assertIsNone(ip_of(None))
        self.assertIsNone(ip_of("localhost"))

    @given(st.text(max_size=60))
    def test_any_text(self, host: str) -> None:
        """Any text is an address or None, never an error."""
        address = ip_of(host)
        self.assertIsInstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address, type(None)))
