"""The fault proxy the end-to-end tests use forwards, cuts with FIN or RST, and goes silent."""

from __future__ import annotations

import socket
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.faultproxy import FaultProxy


class _Echo:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except ConnectionResetError:
                pass  # the proxy's RST cut, which these tests make on purpose


class FaultProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.echo = _Echo()
        self.addCleanup(self.echo.listener.close)
        self.proxy = FaultProxy(self.echo.port)
        self.addCleanup(self.proxy.close)

    def client(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def test_forwards(self) -> None:
        """Bytes go both ways."""
        sock = self.client()
        sock.sendall(b"hello")
        self.assertEqual(sock.recv(100), b"hello")

    def test_cut_with_fin(self) -> None:
        """A FIN cut: the client reads the end of the stream."""
        sock = self.client()
        sock.sendall(b"x")
        self.assertEqual(sock.recv(100), b"x")
        self.proxy.cut("fin")
        self.assertEqual(sock.recv(100), b"")

    def test_cut_with_rst(self) -> None:
        """An RST cut: the client's read is reset."""
        sock = self.client()
        sock.sendall(b"x")
        self.assertEqual(sock.recv(100), b"x")
        self.proxy.cut("rst")
        self.assertRaises(ConnectionResetError, sock.recv, 100)

    def test_silence(self) -> None:
        """Silent: nothing arrives and nothing closes; a new link after restore works."""
        sock = self.client()
        sock.sendall(b"x")
        self.assertEqual(sock.recv(100), b"x")
        self.proxy.silence()
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        self.assertRaises(socket.timeout, sock.recv, 100)  # nothing comes back, nothing closes
        self.proxy.restore()
        fresh = self.client()
        fresh.sendall(b"again")
        self.assertEqual(fresh.recv(100), b"again")
