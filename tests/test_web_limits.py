"""
The web page's limits against peers that hold what they are given, over
real loopback sockets against C{twistd rpisensor serve --web}: event streams
that never read cannot take every page's slot.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import DEADLINE, Twistd

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
