"""
Interoperability with the tutorial's own programs ("TCP/IP communication"):
Python 3 ports of DataServer1, DataServer3 and DataClient1, written with
plain sockets and threads as in the tutorial, against C{twistd rpisensor}
run as a real process.

The ports keep the tutorial's behaviour: DataServer1 answers a C{recv(1024)}
block equal to C{go} plus its NUL; DataServer3 (tcpcom's C{TCPServer}) only
prints what it receives; DataClient1 sends C{go\\0} and reads replies in a
separate receiver thread until the data ends with a NUL. The only additions
are what a test needs: loopback, a free port, recording instead of printing,
and a way to stop the threads.

Every wait is for a condition, with a long deadline; nothing asserts a duration.
"""

from __future__ import annotations

import queue
import re
import socket
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import DEADLINE, Twistd, wait_until
from tests.support import LOOPBACK



def _stop_socket(sock: socket.socket) -> None:
    """Wake a thread blocked on C{sock} (close alone does not, on Linux), then close it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _ThreadedServer:
    """
    The tutorial servers' common part: a listening socket on loopback and an
    accepting thread that starts one handler thread per connection.
    """

    def __init__(self) -> None:
        self.server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # close port when process exits:
        self.server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server_socket.bind(("127.0.0.1", 0))
        self.server_socket.listen(10)
        self.server_socket.settimeout(0.1)  # so the accepting thread can be stopped
        self.port = self.server_socket.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    @property
    def endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = self.server_socket.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    break
                self._connections.append(conn)
                handler = threading.Thread(target=self.handle, args=(conn,), daemon=True)
                self._threads.append(handler)
            handler.start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting, end every connection and join every thread."""
        self._stopping.set()
        self._acceptor.join(DEADLINE)
        self.server_socket.close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            _stop_socket(conn)
        for thread in threads:
            thread.join(DEADLINE)


class DataServer1(_ThreadedServer):
    """
    DataServer1's C{SocketHandler}: C{recv(1024)}; when the block minus its last
    byte (the NUL) is C{go}, reply with the button's state and a NUL.
    """

    def __init__(self, state: str = "Button pressed") -> None:
        self.state = state
        self.commands: list[bytes] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        while True:
            try:
                cmd = conn.recv(1024)
            except OSError:
                # happens when connection is reset from the peer
                break
            if len(cmd) == 0:
                break
            self.executeCommand(conn, cmd)
        conn.close()

    def executeCommand(self, conn: socket.socket, cmd: bytes) -> None:
        self.commands.append(cmd)
        if cmd[:-1] == b"go":  # remove trailing "\0"
            conn.sendall(self.state.encode() + b"\0")


class DataServer3(_ThreadedServer):
    """
    DataServer3, tcpcom's C{TCPServer} that only reports C{MESSAGE} events:
    messages are the received data split on NUL; it never replies.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                break
            if not data:
                break
            *complete, buffer = (buffer + data).split(b"\0")
            for message in complete:
                self.onStateChanged("MESSAGE", message.decode("utf-8"))
        conn.close()

    def onStateChanged(self, state: str, msg: str) -> None:
        if state == "MESSAGE":
            self.messages.append(msg)  # the tutorial prints "Server:-- Message received:"


class DataClient1:
    """
    DataClient1: connect, start a C{Receiver} thread that reads until the data
    ends with a NUL, and send C{go\\0} with C{sendall}. Replies go to C{received}.
    """

    def __init__(self, port: int) -> None:
        self.received: queue.Queue[bytes] = queue.Queue()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.connect(("127.0.0.1", port))
        self.receiver = threading.Thread(target=self._receiver_run, daemon=True)
        self.receiver.start()

    def _receiver_run(self) -> None:
        while True:
            try:
                self.received.put(self.readServerData())
            except Exception:
                break

    def readServerData(self) -> bytes:
        bufSize = 4096
        data = b""
        while data[-1:] != b"\0":  # reply with end-of-message indicator
            blk = self.sock.recv(bufSize)
            if not blk:
                # The tutorial's loop would spin here forever on a closed socket.
                raise ConnectionError("server closed the connection")
            data += blk
        return data

    def sendCommand(self, cmd: str) -> None:
        # append \0 as end-of-message indicator
        self.sock.sendall(cmd.encode() + b"\0")

    def close(self) -> None:
        _stop_socket(self.sock)
        self.receiver.join(DEADLINE)


class _TwistdTestMixin:
    def start(self, *args: str) -> Twistd:
        twistd = Twistd("rpisensor", *args)
        self.addCleanup(twistd.close)
        return twistd


class PollWithDataServer1Tests(_TwistdTestMixin, SynchronousTestCase):
    """C{rpisensor poll} against the tutorial's DataServer1."""

    def test_poll_logs_button_pressed(self) -> None:
        """DataServer1 understands poll's C{go}, and poll logs its C{Button pressed} replies."""
        server = DataServer1("Button pressed")
        self.addCleanup(server.close)
        poll = self.start("poll", "--interval", "0.2", "--connect", server.endpoint)
        pattern = re.compile(rf"Message from 127\.0\.0\.1:{server.port}: Button pressed$", re.M)
        wait_until(lambda: len(pattern.findall(poll.log())) >= 2, describe=poll.log)
        log = poll.stop_cleanly()
        self.assertGreaterEqual(len(pattern.findall(log)), 2, log)
        self.assertNotIn("No reply", log)
        self.assertGreaterEqual(len(server.commands), 2)
        self.assertEqual(set(server.commands), {b"go\0"})


class ReportToDataServer3Tests(_TwistdTestMixin, SynchronousTestCase):
    """C{rpisensor report} against the tutorial's DataServer3."""

    def test_report_sends_button_released(self) -> None:
        """
        DataServer3 receives C{report}'s messages, each exactly C{Button released}, after one
        C{hello} line: the only trace of the v2 offer it never answers (the tutorial says so).
        """
        server = DataServer3()
        self.addCleanup(server.close)
        report = self.start(
            "report", "--gpio", "sim", "--interval", "0.2", "--connect", server.endpoint
        )
        wait_until(lambda: len(server.messages) >= 3, describe=report.log)
        log = report.stop_cleanly()
        messages = list(server.messages)
        self.assertGreaterEqual(len(messages), 3)
        self.assertEqual([m for m in messages if m.startswith("hello ")], messages[:1])
        self.assertRegex(messages[0], r'^hello \{"v":2,"role":"report","device":"[^"]+","stream":"[0-9a-f]{16}"')
        self.assertEqual(set(messages[1:]), {"Button released"})
        self.assertEqual(log.count("so it gets plain text"), 1, log)

    def test_a_press_while_the_hello_waits_is_shown(self) -> None:
        """
        A press and release in the seconds the hello waits for an answer reach
        DataServer3 in order once plain text wins (they used to be dropped: only
        the state at the fallback was sent).
        """
        server = DataServer3()
        self.addCleanup(server.close)
        report = self.start(
            "report", "--gpio", "sim", "--interval", "0.1", "--on-change", "--connect", server.endpoint,
            "--sim-pattern", "button=1,600",
        )  # fmt: skip
        wait_until(lambda: "Button released" in server.messages, describe=report.log)
        report.stop_cleanly()
        messages = list(server.messages)
        self.assertTrue(messages[0].startswith("hello "), messages)
        self.assertEqual(messages[1:3], ["Button pressed", "Button released"])

    def test_report_protocol_1_sends_no_hello(self) -> None:
        """With C{--protocol 1}, DataServer3 sees exactly what DataClient3 would send: nothing new."""
        server = DataServer3()
        self.addCleanup(server.close)
        report = self.start(
            "report", "--gpio", "sim", "--interval", "0.2", "--protocol", "1", "--connect", server.endpoint
        )
        wait_until(lambda: len(server.messages) >= 2, describe=report.log)
        report.stop_cleanly()
        self.assertEqual(set(server.messages), {"Button released"})


class DataClient1WithServeTests(_TwistdTestMixin, SynchronousTestCase):
    """The tutorial's DataClient1 against C{rpisensor serve}."""

    def test_go_answered_with_button_released(self) -> None:
        """Each C{go} from DataClient1 is answered with exactly C{Button released} and a NUL."""
        serve = self.start("serve", "--gpio", "sim", "--listen", LOOPBACK)
        port = serve.wait_port(LOOPBACK)
        client = DataClient1(port)
        self.addCleanup(client.close)
        replies = []
        for _ in range(3):
            client.sendCommand("go")
            replies.append(client.received.get(timeout=DEADLINE))
        self.assertEqual(replies, [b"Button released\0"] * 3)
        client.close()
        serve.stop_cleanly()
