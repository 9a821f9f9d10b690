"""
The page answers only to its own names: L{rpisensor.web.hosts} and the root
that checks every request, frames refused, and this machine's full name
learnt in a thread, never on the reactor.
"""

from __future__ import annotations

import socket
import threading

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rpisensor.testing import wait_until
from rpisensor.web.hosts import AllowedHosts, host_name
from tests.test_web import Request, WebTestCase


def with_host(host: str | None) -> Request:
    request = Request(b"/api/state")
    if host is not None:
        request.requestHeaders.setRawHeaders(b"host", [host.encode()])
    return request


class AllowedHostsTests(SynchronousTestCase):
    def test_names_this_machine_answers_to(self):
        """Addresses, localhost, the host name and NAME.local, and names given; nothing else."""
        own = socket.gethostname().lower()
        hosts = AllowedHosts(["Sensors.Example.org."])
        for host in ("127.0.0.1:8080", "192.168.1.5", "[::1]:8080", "[fe80::1]", "localhost:8080", own,
                     f"{own}.local:8080", f"{own.upper()}.LOCAL.", "sensors.example.org:8080", None):  # fmt: skip
            with self.subTest(host=host):
                self.assertTrue(hosts.allows(with_host(host)))
        for host in ("attacker.example", f"{own}.attacker.example", "localhost.attacker.example:80",
                     "sensors.example.org.evil", "127.0.0.1.nip.io"):  # fmt: skip
            with self.subTest(host=host):
                self.assertFalse(hosts.allows(with_host(host)))

    def test_host_name(self):
        self.assertEqual(host_name(with_host("[::1]:8080")), "::1")
        self.assertEqual(host_name(with_host("Pi.Local.:80")), "pi.local")
        self.assertEqual(host_name(with_host(None)), "")


class RootTests(WebTestCase):
    def test_every_path_refuses_another_name(self):
        """Any path asked for by another name is 403, with how to allow it; the page's own name gets it."""
        for path in (b"/", b"/api/state", b"/api/readings", b"/events", b"/metrics", b"/static/app.js", b"/nope"):
            with self.subTest(path=path):
                request = self.get(path, headers={"Host": "attacker.example:8080"})
                self.assertEqual(request.responseCode, 403)
                self.assertIn("add --web-host attacker.example", request.json()["error"])
        self.assertIsNone(self.get(b"/api/state", headers={"Host": "127.0.0.1:8080"}).responseCode)

    def test_no_answer_may_be_framed(self):
        """Every answer, refusals and 404s too, forbids framing by another site."""
        for path, host in ((b"/", "127.0.0.1"), (b"/nope", "127.0.0.1"), (b"/api/state", "attacker.example")):
            with self.subTest(path=path):
                request = self.get(path, headers={"Host": host})
                self.assertEqual(request.responseHeaders.getRawHeaders(b"x-frame-options"), [b"DENY"])
                self.assertEqual(request.responseHeaders.getRawHeaders(b"content-security-policy"),
                                 [b"frame-ancestors 'none'"])  # fmt: skip


class FullNameTests(TestCase):
    async def test_the_full_name_is_learnt_in_a_thread(self):
        """The full name (a reverse lookup) is looked up once, in the reactor's pool, then allowed."""
        threads = []

        def getfqdn():
            threads.append(threading.current_thread())
            return "Pi.Example.Lan."

        self.patch(socket, "getfqdn", getfqdn)
        hosts = AllowedHosts()
        self.assertFalse(hosts.allows(with_host("pi.example.lan")))
        hosts.learn_full_name(reactor)
        await wait_until(lambda: hosts.allows(with_host("pi.example.lan:8080")), reactor)
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())
