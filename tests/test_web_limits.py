"""
The web page against hostile peers and pages, over real loopback sockets
against C{twistd rpisensor} as a user starts it: event streams that never
read cannot take every page's slot; a request naming another host (DNS
rebinding) reads nothing; the page's switches go through the control rate
limit and the control log, as C{set} does.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import DEADLINE, Twistd, wait_until
from tests.test_collect_v2_e2e import STREAM, V2Reporter

EVENTS = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"


def open_events(port: int, source: str = "127.0.0.1") -> socket.socket:
    """An event stream from C{source} (any loopback address) that reads nothing after its headers."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(DEADLINE)
    sock.connect(("127.0.0.1", port))
    sock.sendall(EVENTS)
    return sock


def status_of(sock: socket.socket) -> bytes:
    """The status line of the answer on C{sock}."""
    head = b""
    while b"\r\n" not in head:
        block = sock.recv(1)
        if not block:
            raise AssertionError(f"closed before a status line; got {head!r}")
        head += block
    return head.split(b"\r\n")[0]


class EventSlotTests(SynchronousTestCase):
    def start(self, *options: str) -> int:
        serve = self.serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
                                    "--web", "tcp:0", *options)  # fmt: skip
        self.addCleanup(serve.close)
        return serve.wait_port("tcp:0:interface=127.0.0.1")

    def test_streams_that_never_read_leave_room_for_other_pages(self):
        """
        30 event streams from one address that never read: past --web-max-clients-per-host
        (10) they get 429, so a page from another address still follows (before: 503).
        """
        web = self.start("--web-max-clients", "30")
        hogs = [open_events(web) for _ in range(30)]
        for hog in hogs:
            self.addCleanup(hog.close)
        statuses = [status_of(hog) for hog in hogs]
        self.assertEqual(statuses.count(b"HTTP/1.1 200 OK"), 10)
        self.assertEqual(statuses.count(b"HTTP/1.1 429 Too Many Requests"), 20)
        with open_events(web, source="127.0.0.2") as page:
            self.assertEqual(status_of(page), b"HTTP/1.1 200 OK")


def fetch(port: int, path: str, host: str = "127.0.0.1", method: str = "GET") -> tuple[int, dict, bytes]:
    """The status, headers and body of C{path}, asked for with the Host header C{host}."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     headers={"Host": host, "X-Rpisensor": "1"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class HostTests(SynchronousTestCase):
    def test_a_rebinding_page_reads_nothing_of_collect(self):
        """
        collect's /api/state lists every stream: asked for by another name (a page whose
        DNS now points here), it is 403 and names no stream; by its address, it is there.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        collect = Twistd("rpisensor", "collect", "--listen", "tcp:0", "--web", "tcp:0",
                         "--store", os.path.join(directory, "r.sqlite"))  # fmt: skip
        self.addCleanup(collect.close)
        port, web = collect.wait_port("tcp:0"), collect.wait_port("tcp:0:interface=127.0.0.1")
        reporter = V2Reporter(port, last=0)
        self.addCleanup(reporter.close)
        wait_until(lambda: STREAM.encode() in fetch(web, "/api/state")[2])
        for path in ("/api/state", "/api/readings?window=60", "/metrics", "/", "/events"):
            with self.subTest(path=path):
                code, headers, body = fetch(web, path, host=f"attacker.example:{web}")
                self.assertEqual(code, 403)
                self.assertNotIn(STREAM.encode(), body)
                self.assertEqual(json.loads(body)["error"], "this server is not 'attacker.example': open it by "
                                 "its address or its own name, or add --web-host attacker.example")  # fmt: skip
        code, headers, body = fetch(web, "/api/state", host=f"localhost:{web}")
        self.assertEqual(code, 200)
        self.assertEqual((headers["X-Frame-Options"], headers["Content-Security-Policy"]), ("DENY", "frame-ancestors 'none'"))
        self.assertIn("Refused a web request for 'attacker.example'", collect.stop_cleanly())


class SwitchTests(SynchronousTestCase):
    def test_the_pages_switches_are_rate_limited_and_logged(self):
        """51 switch POSTs from a page, as 51 set commands: past --control-rate they get 429; each logged with who."""
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
                       "--output", "led=12", "--control-rate", "5", "--web", "tcp:0")  # fmt: skip
        self.addCleanup(serve.close)
        web = serve.wait_port("tcp:0:interface=127.0.0.1")
        codes = [fetch(web, f"/api/outputs/led?action={'on' if n % 2 else 'off'}", method="POST")[0]
                 for n in range(51)]  # fmt: skip
        self.assertIn(429, codes)
        self.assertEqual(set(codes), {200, 429})
        code, _, body = fetch(web, "/api/outputs/led?action=on", method="POST")
        if code == 429:
            self.assertIn("too many control commands: at most 5 a second (--control-rate)", json.loads(body)["error"])
        log = serve.stop_cleanly()
        self.assertIn("Control command from a web page from 127.0.0.1:", log)
        self.assertIn("Too many control commands from a web page from 127.0.0.1:", log)
        self.assertEqual(log.count("Control command from a web page"), codes.count(200) + (code == 200))

