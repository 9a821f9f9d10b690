"""
Peers that trickle: a message (the sensor port) or a request (the web) sent
one byte every few seconds resets the idle timeout with each byte, so
without a deadline such peers hold every slot for as long as they like.
C{--message-timeout} bounds the time from a message's first byte to its end.
On Twisted's doubles with a L{Clock}, then against C{twistd rpisensor serve}
over real loopback sockets.
"""

from __future__ import annotations

import threading
import urllib.request

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from rpisensor.net.access import AccessPolicy
from rpisensor.net.limits import ServerLimits
from rpisensor.web.site import WebSite
from tests.processes import DEADLINE, Twistd, connect_tcp, request, wait_until
from tests.support import ServerHarness, replies


class SensorPortTests(SynchronousTestCase):
    """serve's connections: a message begun must end within --message-timeout."""

    def setUp(self):
        self.pi = ServerHarness(limits=ServerLimits(message_timeout=60.0))

    def test_a_trickled_message_is_closed_at_the_deadline(self):
        """One byte every 5 s (each resetting the idle time): closed within a sweep of 60 s, and logged."""
        protocol, transport = self.pi.connect()
        with capturedLogs() as events:
            for second in range(0, 55, 5):  # up to 55 s: open
                protocol.dataReceived(b"g")
                self.pi.clock.advance(5)
                self.assertFalse(transport.disconnecting, f"closed after {second + 5} s")
            for _ in range(3):
                protocol.dataReceived(b"g")
                self.pi.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(any("has not ended (no NUL; --message-timeout)" in e.get("log_format", "") for e in events))

    def test_whole_messages_never_count(self):
        """A client sending whole messages, however long it stays, is never closed by the deadline."""
        protocol, transport = self.pi.connect()
        for _ in range(100):
            protocol.dataReceived(b"ping\0pi")  # each segment ends a message and begins the next
            self.pi.clock.advance(5)
            protocol.dataReceived(b"ng\0")
            self.pi.clock.advance(5)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(set(replies(transport)), {b"pong"})

    def test_time_we_keep_it_waiting_does_not_count(self):
        """Paused because its work waits for a slow read, a client's half message is not held against it."""
        pi = ServerHarness(limits=ServerLimits(message_timeout=60.0, max_pending=1))
        protocol, transport = pi.connect()
        protocol.dataReceived(b"go\0go")  # the first go waits for the read: reading pauses
        self.assertEqual(transport.producerState, "paused")
        pi.clock.advance(120)
        self.assertFalse(transport.disconnecting)
        pi.finish_reads()
        self.assertEqual(transport.producerState, "producing")
        pi.clock.advance(30)
        self.assertFalse(transport.disconnecting)


class _Ok(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"ok"


class WebRequestTests(SynchronousTestCase):
    """The page's HTTP: a request must arrive whole within --message-timeout, else 408."""

    def setUp(self):
        self.clock = Clock()
        self.site = WebSite(_Ok(), self.clock, AccessPolicy(), ServerLimits(message_timeout=60.0))

    def connect(self):
        channel = self.site.buildProtocol(IPv4Address("TCP", "192.168.1.7", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.1.7", 40000))
        channel.makeConnection(transport)
        return channel, transport

    def test_trickled_headers_get_408(self):
        """A header byte every 5 s: at 60 s a 408, and the connection closes."""
        channel, transport = self.connect()
        for byte in b"GET /api/state HTTP/1.1\r\nHost: pi\r\n":
            channel.dataReceived(bytes([byte]))
            self.clock.advance(5)
            if transport.disconnecting:
                break
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n"), transport.value())
        self.assertIn(b"did not arrive whole within 60 s", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_a_trickled_body_too(self):
        """Quick headers do not save a body that trickles."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /api/outputs/led?action=on HTTP/1.1\r\nHost: pi\r\nContent-Length: 100\r\n\r\n")
        for _ in range(13):
            channel.dataReceived(b"x")
            self.clock.advance(5)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408"))

    def test_a_kept_alive_connection_waits_without_a_deadline(self):
        """Between requests only the idle timeout counts; the next request gets its own deadline."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: pi\r\n\r\n")
        self.clock.advance(59)
        transport.clear()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: pi\r\n\r\n")
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.assertNotIn(b"408", transport.value())

    def test_the_option(self):
        """--message-timeout sets the deadline; 0 is refused (a trickle would hold a slot for ever)."""
        from twisted.python import usage

        from rpisensor.roles.serve.options import ServeOptions

        options = ServeOptions()
        options.parseOptions(["--message-timeout", "20"])
        self.assertEqual(options.listen_settings().limits.message_timeout, 20.0)
        self.assertEqual(ServerLimits().message_timeout, 60.0)
        with self.assertRaises(usage.UsageError) as caught:
            ServeOptions().parseOptions(["--message-timeout", "0"])
        self.assertIn("--message-timeout must be more than 0 seconds", str(caught.exception))

    def test_one_address_takes_at_most_its_share(self):
        """From one LAN address at most --max-connections-per-host web connections; others still get in."""
        site = WebSite(_Ok(), self.clock, AccessPolicy(), ServerLimits(max_connections_per_host=2))
        built = [site.buildProtocol(IPv4Address("TCP", "192.168.1.7", 40000 + n)) for n in range(3)]
        self.assertIsNone(built[2])
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "192.168.1.8", 40000)))


class _Tricklers:
    """Ten sockets sending one byte each every 0.2 s from a thread, and what the server sent each."""

    def __init__(self, test: SynchronousTestCase, port: int, data: bytes) -> None:
        self.socks = [connect_tcp(port) for _ in range(10)]
        self.received = [b""] * len(self.socks)
        self.ended = [False] * len(self.socks)
        for sock in self.socks:
            test.addCleanup(sock.close)
            sock.setblocking(False)
        self._data = data
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        test.addCleanup(self._thread.join)
        test.addCleanup(self._stop.set)

    def _run(self) -> None:
        offset = 0
        while not self._stop.wait(0.2):
            byte = self._data[offset % len(self._data) :][:1]
            for sock in self.socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass  # closed by the server: what the test waits for
            offset += 1

    def all_closed(self) -> bool:
        """Read what came; whether the server has closed every one."""
        for n, sock in enumerate(self.socks):
            while not self.ended[n]:
                try:
                    block = sock.recv(4096)
                except BlockingIOError:
                    break
                except ConnectionResetError:
                    block = b""
                self.received[n] += block
                self.ended[n] = not block
        return all(self.ended)


class RealSocketTests(SynchronousTestCase):
    """serve with --max-connections 10: ten tricklers fill it until their deadline frees the slots."""

    def setUp(self):
        self.serve = Twistd(
            "rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
            "--web", "tcp:0", "--max-connections", "10", "--message-timeout", "2",
        )  # fmt: skip
        self.addCleanup(self.serve.close)
        self.port = self.serve.wait_port("tcp:0")
        self.web = self.serve.wait_port("tcp:0:interface=127.0.0.1")

    def test_sensor_port(self):
        """Ten trickled messages hold every slot, then are closed; the next client's go is answered."""
        tricklers = _Tricklers(self, self.port, b"go go go go")
        with connect_tcp(self.port) as late:
            self.assertEqual(late.recv(4096), b"error: busy: too many connections\0")
        wait_until(tricklers.all_closed, describe=self.serve.log)
        self.assertEqual(set(tricklers.received), {b""})
        with connect_tcp(self.port) as good:
            self.assertEqual(request(good, b"go"), b"Button released\0")
        self.assertIn("has not ended (no NUL; --message-timeout)", self.serve.stop_cleanly())

    def test_web(self):
        """Ten trickled requests hold every web slot, then get 408; the next page loads."""
        tricklers = _Tricklers(self, self.web, b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 1000)
        with connect_tcp(self.web) as late:
            self.assertEqual(late.recv(4096), b"")  # closed at once: no slot
        wait_until(tricklers.all_closed, describe=self.serve.log)
        self.assertEqual({r.split(b"\r\n")[0] for r in tricklers.received}, {b"HTTP/1.1 408 Request Timeout"})
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/api/state", timeout=DEADLINE) as page:
            self.assertEqual(page.status, 200)
        self.assertIn("its request had not arrived whole 2 s after it began", self.serve.stop_cleanly())
