"""
Cross-protocol requests: a web page can make a browser send an HTTP request
to the sensor port (C{fetch("http://pi:22000/", {method: "POST", body:
"\\0set led on\\0"})} needs no preflight), so a connection whose first line is
an HTTP request is closed before anything in it is a command, and a message
with a line break inside is refused. On Twisted's doubles, then over real
loopback TCP against C{twistd rpisensor serve --output led=12}. The browser
itself sends the request in L{tests.test_web_browser}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.roles.serve.connection import LINE_BREAK_REFUSAL
from tests.processes import DEADLINE, Twistd, connect_tcp, request
from tests.support import LOOPBACK, CollectorHarness, read_jsonl, replies
from tests.test_control import LED, ControlHarness

#: What Chromium sends for C{fetch("http://127.0.0.1:22000/", {method: "POST", mode: "no-cors",
#: body: "\\0set led on\\0"})} from a page on another site: headers, then the body.
BROWSER_POST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:22000\r\nConnection: keep-alive\r\nContent-Length: 12\r\n"
    b"Origin: http://attacker.example\r\nContent-Type: text/plain;charset=UTF-8\r\nAccept: */*\r\n"
    b"Sec-Fetch-Mode: no-cors\r\nReferer: http://attacker.example/\r\n\r\n\0set led on\0"
)


def cross_protocol_lines(events) -> list[dict]:
    return [e for e in events if "cross-protocol" in e.get("log_format", "")]


class FirstLineTests(SynchronousTestCase):
    def setUp(self):
        self.pi = ControlHarness()

    def test_a_browsers_post_drives_nothing(self):
        """The whole request in one segment: the connection is aborted, the led stays off, one line says why."""
        protocol, transport = self.pi.connect("127.0.0.1")  # loopback: it holds the control grant
        with capturedLogs() as events:
            protocol.dataReceived(BROWSER_POST)
        self.assertFalse(self.pi.high(LED))
        self.assertTrue(transport.disconnected)
        self.assertEqual(replies(transport), [])
        [line] = cross_protocol_lines(events)
        self.assertEqual(line["line"], "POST / HTTP/1.1")
        self.assertEqual(line["peer"], "127.0.0.1:40000")

    def test_at_every_split(self):
        """However the request is cut into segments, nothing in it is carried out."""
        for cut in range(1, len(BROWSER_POST)):
            with self.subTest(cut=cut):
                pi = ControlHarness()
                protocol, transport = pi.connect("127.0.0.1")
                protocol.dataReceived(BROWSER_POST[:cut])
                if not transport.disconnected:
                    protocol.dataReceived(BROWSER_POST[cut:])
                self.assertTrue(transport.disconnected)
                self.assertFalse(pi.high(LED))
                self.assertEqual(replies(transport), [])

    def test_a_get_is_closed_before_it_ends(self):
        """A request line with no NUL behind it is closed as soon as its line is there."""
        protocol, transport = self.pi.connect()
        protocol.dataReceived(b"GET /api/state HTTP/1.1\r\n")
        self.assertTrue(transport.disconnected)

    def test_the_tutorials_commands_are_untouched(self):
        """Commands with CR/LF around them are answered as before; so is a later GET-like text."""
        protocol, transport = self.pi.connect("127.0.0.1")
        protocol.dataReceived(b"ping\r\n\0set led on\0 outputs \0GET / HTTP/1.1\0")
        self.assertFalse(transport.disconnected)
        self.assertEqual(replies(transport), [
            b"pong", b"led on", b"led=on motor=off gate=on", b"error: unknown command 'get'; send 'help' for the list",
        ])  # fmt: skip

    @settings(max_examples=300)
    @given(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b" HTTP/" not in b))
    def test_no_other_first_line_is_taken_for_http(self, first):
        """Only a request line (METHOD TARGET HTTP/n) closes a connection at its start."""
        pi = ControlHarness()
        protocol, transport = pi.connect()
        protocol.dataReceived(first + b"\0ping\0")
        self.assertFalse(transport.disconnected)
        self.assertEqual(replies(transport)[-1], b"pong")


class LineBreakTests(SynchronousTestCase):
    def test_a_line_break_inside_is_refused(self):
        """A message with CR or LF inside gets an error and is not carried out; the connection stays."""
        pi = ControlHarness()
        client = pi.connect("127.0.0.1")
        for message in ("set led on\r\nHost: x", "set\nled on", "set led\ron"):
            with self.subTest(message=message):
                self.assertEqual(pi.ask(client, message)[-1], LINE_BREAK_REFUSAL)
        self.assertFalse(pi.high(LED))
        self.assertEqual(pi.ask(client, "set led on\r\n")[-1], "led on")
        self.assertFalse(client[1].disconnecting)


class RealSocketTests(SynchronousTestCase):
    """The request as a browser sends it, over loopback TCP, to serve as a user starts it."""

    def test_serve_closes_it_and_the_led_stays_off(self):
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", LOOPBACK,
                       "--output", "led=12")  # fmt: skip
        self.addCleanup(serve.close)
        port = serve.wait_port(LOOPBACK)
        with connect_tcp(port) as sock:
            sock.sendall(BROWSER_POST)
            sock.settimeout(DEADLINE)
            try:
                received = sock.recv(4096)
            except ConnectionResetError:
                received = b""
        self.assertEqual(received, b"")  # closed (an abort: maybe a reset), nothing answered
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"outputs"), b"led=off\0")
        log = serve.stop_cleanly()
        self.assertIn("began with an HTTP request ('POST / HTTP/1.1'), not this server's protocol", log)
        self.assertNotIn("Control command", log)


class UntouchedPeerTests(SynchronousTestCase):
    def test_collect_stores_a_reporters_text_as_before(self):
        """collect takes only a request line for HTTP: a reporter's text is stored, as always."""
        harness = CollectorHarness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived("Host: kitchen 21 °C\0GET / HTTP/1.1\r\n\0".encode())
        harness.write()
        self.assertFalse(transport.disconnecting)
        self.assertEqual([r["message"] for r in read_jsonl(harness.path)], ["Host: kitchen 21 °C", "GET / HTTP/1.1\r\n"])

    def test_collect_closes_an_http_request_too(self):
        """A browser's request to collect's port stores nothing."""
        harness = CollectorHarness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(BROWSER_POST)
        harness.write()
        self.assertTrue(transport.disconnected)
        self.assertEqual(read_jsonl(harness.path), [])
