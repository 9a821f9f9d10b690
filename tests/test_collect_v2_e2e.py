"""
End to end: C{twistd rpisensor collect} and C{poll --subscribe} as real
processes, with plain blocking sockets playing the other side: a v2
reporter whose collector is killed with SIGKILL and restarted (every reading
stored exactly once), the tutorial's DataClient3 (it sees nothing new and is
stored as before), and the tutorial's DataServer1 under C{poll --subscribe}
(polled with C{go} after the hello goes unanswered).

Only loopback addresses. Every wait is for a condition, with a long
deadline; nothing asserts a duration.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import threading

from twisted.trial.unittest import SynchronousTestCase

import tests.test_interop as interop
from rpisensor.testing import stored_stream
from rpisensor.wire import v2
from tests.certs import escape, make_ca, make_leaf
from tests.processes import DEADLINE, Twistd, connect_tcp, wait_until
from tests.support import LOOPBACK, read_store

STREAM = "8f3a1c2e9b7d4a60"
TS = "2026-12-01T19:33:25.123Z"


class V2Reporter:
    """A blocking v2 reporter: hello, then readings; it reads welcome and acks as they come."""

    def __init__(self, port: int, last: int, sock: socket.socket | None = None, device: str = "pi-kitchen") -> None:
        self.sock = sock or connect_tcp(port)
        self._buffer = b""
        self.acked = 0
        self.sock.sendall(frame(v2.encode(v2.Hello("report", device, STREAM, 10.0, last))))
        welcome = self.next_frame()
        assert isinstance(welcome, v2.Welcome), welcome
        self.welcome = welcome
        self.acked = welcome.acked

    def next_frame(self) -> v2.Frame:
        while b"\0" not in self._buffer:
            block = self.sock.recv(65536)
            if not block:
                raise ConnectionError(f"the collector closed the connection; got {self._buffer!r}")
            self._buffer += block
        body, self._buffer = self._buffer.split(b"\0", 1)
        return v2.parse(body.decode())

    def send(self, first: int, last: int) -> None:
        self.sock.sendall(b"".join(frame(reading(seq)) for seq in range(first, last + 1)))

    def wait_acked(self, seq: int) -> None:
        while self.acked < seq:
            got = self.next_frame()
            if isinstance(got, v2.Ack):
                self.acked = got.seq

    def close(self) -> None:
        self.sock.close()


def frame(text: str) -> bytes:
    return text.encode() + b"\0"


def reading(seq: int) -> str:
    return v2.encode(v2.Reading(stream=STREAM, seq=seq, ts=TS, synced=True, sensor="button", value=seq % 2, text="Button pressed" if seq % 2 else "Button released"))


class _Mixin:
    def start(self, *args: str) -> Twistd:
        twistd = Twistd("rpisensor", *args)
        self.addCleanup(twistd.close)
        return twistd

    def start_collector(self, store: str) -> tuple[Twistd, int]:
        collector = self.start("collect", "--listen", LOOPBACK, "--store", store)
        return collector, collector.wait_port(LOOPBACK)


class CollectorKilledTests(_Mixin, SynchronousTestCase):
    def check(self, suffix: str) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        store = os.path.join(directory, "readings" + suffix)
        collector, port = self.start_collector(store)
        reporter = V2Reporter(port, last=400)
        self.addCleanup(reporter.close)
        self.assertEqual(reporter.acked, 0)
        reporter.send(1, 200)
        reporter.wait_acked(200)
        reporter.send(201, 400)  # then the collector dies, some of these stored, some not, acks lost
        collector.stop(signal.SIGKILL)
        reporter.close()
        collector, port = self.start_collector(store)
        reporter = V2Reporter(port, last=400)
        self.addCleanup(reporter.close)
        resumed = reporter.welcome.acked
        self.assertGreaterEqual(resumed, 200)
        reporter.send(resumed + 1, 400)
        reporter.wait_acked(400)
        reporter.close()
        log = collector.stop_cleanly()
        self.assertIn(f"resuming after seq {resumed}", log)
        self.assertEqual([r.seq for r in stored_stream(store)], list(range(1, 401)))

    def test_sqlite(self) -> None:
        """A collector killed mid-stream resumes at what it had stored: each reading once, in order."""
        self.check(".sqlite")

    def test_jsonl(self) -> None:
        """The same with a JSON Lines store, whose high-water marks come from a scan at start."""
        self.check(".jsonl")


class DataClient3(threading.Thread):
    """
    The tutorial's DataClient3 (tcpcom's C{TCPClient}): connect, send each
    message with a NUL; a receiver thread keeps whatever the server sends.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.received = b""
        self.start()

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.received += data

    def sendMessage(self, msg: str) -> None:
        self.sock.sendall((msg + "\0").encode())

    def disconnect(self) -> None:
        interop._stop_socket(self.sock)
        self.join(DEADLINE)


class TutorialPeersTests(_Mixin, SynchronousTestCase):
    def test_data_client3_sees_nothing_new(self) -> None:
        """DataClient3's messages are stored as v1 records, and it is sent nothing, as before v2."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        store = os.path.join(directory, "readings.sqlite")
        collector, port = self.start_collector(store)
        client = DataClient3(port)
        self.addCleanup(client.disconnect)
        sent = ["Button pressed", "Button released", "hello there", "Button pressed"]
        for message in sent:
            client.sendMessage(message)
        wait_until(lambda: len(read_store(store)) == len(sent), describe=collector.log)
        client.disconnect()
        collector.stop_cleanly()
        records = read_store(store)
        self.assertEqual([r["message"] for r in records], sent)
        self.assertEqual(stored_stream(store), [])
        self.assertEqual(client.received, b"")

    def test_poll_subscribe_with_data_server1(self) -> None:
        """DataServer1 ignores the hello; after --hello-timeout poll --subscribe polls it with go."""
        server = interop.DataServer1("Button pressed")
        self.addCleanup(server.close)
        poll = self.start(
            "poll", "--subscribe", "--hello-timeout", "0.5", "--interval", "0.2", "--connect", server.endpoint
        )
        pattern = re.compile(rf"Message from 127\.0\.0\.1:{server.port}: Button pressed$", re.M)
        wait_until(lambda: len(pattern.findall(poll.log())) >= 2, describe=poll.log)
        log = poll.stop_cleanly()
        self.assertIn("does not stream readings (no answer to hello within 0.5 s", log)
        self.assertEqual(server.commands[0], b'hello {"v":2,"role":"subscribe","heartbeat":10}\0')
        self.assertEqual(set(server.commands[1:]), {b"go\0"})


class IdentityTests(_Mixin, SynchronousTestCase):
    """C{collect --client-ca}: the certificate's CN is the only device a reporter may be."""

    def setUp(self) -> None:
        directory = self.directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        ca, ca_key, ca_cert = make_ca("identity test CA")
        server = make_leaf(ca_key, ca_cert, "localhost", ("localhost",), ("127.0.0.1",))
        client = make_leaf(ca_key, ca_cert, "pi-kitchen", server=False)
        self.files = {}
        for name, data in (("ca", ca.cert_pem), ("server.crt", server.cert_pem), ("server.key", server.key_pem),
                           ("client.crt", client.cert_pem), ("client.key", client.key_pem)):  # fmt: skip
            path = self.files[name] = os.path.join(directory, name + ".pem")
            with open(path, "wb") as f:
                f.write(data)

    def tls_socket(self, port: int) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=self.files["ca"])
        context.load_cert_chain(self.files["client.crt"], self.files["client.key"])
        sock = context.wrap_socket(connect_tcp(port), server_hostname="localhost")
        self.addCleanup(sock.close)
        return sock

    def test_identity_recorded_and_checked(self) -> None:
        """The CN is recorded with each reading; a hello naming another device is refused in one line."""
        store = os.path.join(self.directory, "readings.jsonl")
        listen = (f"ssl:0:interface=127.0.0.1:privateKey={escape(self.files['server.key'])}"
                  f":certKey={escape(self.files['server.crt'])}")  # fmt: skip
        collector = self.start("collect", "--listen", listen, "--client-ca", self.files["ca"], "--store", store)
        port = collector.wait_port(listen)
        reporter = V2Reporter(port, last=2, sock=self.tls_socket(port))
        reporter.send(1, 2)
        reporter.wait_acked(2)
        reporter.close()
        impostor = self.tls_socket(port)
        impostor.sendall(frame(v2.encode(v2.Hello("report", "pi-hall", STREAM, 10.0))))
        received = b""
        while block := impostor.recv(4096):
            received += block
        impostor.close()
        refusal = v2.Refused("device 'pi-hall' does not match your certificate (CN=pi-kitchen)")
        self.assertEqual(received, frame(v2.encode(refusal)))
        collector.stop_cleanly()
        self.assertEqual([(r.seq, r.identity) for r in stored_stream(store)], [(1, "pi-kitchen"), (2, "pi-kitchen")])


class HostileReporterTests(_Mixin, SynchronousTestCase):
    """One reporter's reading that no store can hold never costs another reporter its acknowledgements."""

    BAD = (
        'reading {"stream":"' + STREAM + '","seq":1,"ts":"' + TS + '","synced":true,"sensor":"button",'
        '"value":1,"text":"\\ud800"}'
    )

    def check(self, suffix: str) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        store = os.path.join(directory, "readings" + suffix)
        collector, port = self.start_collector(store)
        victim = V2Reporter(port, last=200, device="victim")
        self.addCleanup(victim.close)
        for round in range(5):
            attacker = V2Reporter(port, last=1, device="attacker")
            self.addCleanup(attacker.close)
            first = round * 40 + 1
            victim.send(first, first + 39)
            attacker.sock.sendall(frame(self.BAD))  # in the same moment: one batch, before the fix
            reply = b""
            while b"\0" not in reply:
                block = attacker.sock.recv(4096)
                self.assertTrue(block, f"the collector closed the attacker's connection; got {reply!r}")
                reply += block
            self.assertEqual(
                reply.split(b"\0")[0].decode(),
                "error: reading: 'text' holds \\ud800, half of a UTF-16 pair, which is not a character "
                "and cannot be stored; send the character itself (or both halves)",
            )
            attacker.close()
            victim.wait_acked(first + 39)
        victim.close()
        collector.stop_cleanly()
        self.assertEqual([(r.device, r.seq) for r in stored_stream(store)], [("victim", s) for s in range(1, 201)])

    def test_sqlite(self) -> None:
        """SQLite: the attacker's frame is refused naming the field; the victim gets every ack."""
        self.check(".sqlite")

    def test_jsonl(self) -> None:
        """JSON Lines: the same."""
        self.check(".jsonl")
