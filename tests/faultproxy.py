"""
A loopback TCP proxy for end-to-end tests with real processes: it forwards
every connection to a target port, and the test can, at any moment, cut every
link with a FIN or an RST, or make them silent (a half-open link: the
proxy's sockets stay open, and nothing is forwarded either way, as when a NAT
forgets the connection or the PC loses power).

It runs in a thread of the test process, so a synchronous test drives it
while its child processes run. Nothing here measures time.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading


class FaultProxy:
    """
    Listens on 127.0.0.1 (L{port}) and forwards to C{target_port}.

    @ivar links: how many client connections were accepted so far.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._silent = False
        self._refusing = False
        self._stop = False
        self.links = 0
        self._unlisten: list[socket.socket] = []
        self._relisten: list[socket.socket] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    # -- what the test does ------------------------------------------------------

    def cut(self, how: str = "fin") -> None:
        """Close every link now, both ends: C{"fin"} (a clean close) or C{"rst"} (a reset)."""
        with self._lock:
            sockets = list(self._pairs)
            self._pairs.clear()
        if how == "rst":
            # Every socket first, then the closes: once one end is closed the proxy's
            # thread may close its partner itself, which must then reset too, not FIN.
            for sock in sockets:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass  # closed by the proxy's thread already
        for sock in sockets:
            self._drop(sock)
        self._wake()

    def silence(self) -> None:
        """Stop forwarding on every link, open ones and new ones, without closing anything."""
        self._silent = True

    def restore(self) -> None:
        """Forward again (links made silent stay silent: their bytes are gone; new links work)."""
        with self._lock:
            silent = list(self._pairs)
            self._pairs.clear()
        self._silent = False
        for sock in silent:  # a real path that came back would not carry the old links either
            self._drop(sock, quietly=True)
        self._wake()

    def refuse(self, refusing: bool = True) -> None:
        """Accept and close at once every new connection while C{refusing} (the server is down)."""
        self._refusing = refusing

    def down(self) -> None:
        """
        The server is gone: cut every link (RST) and stop listening, so that a
        new connection is refused by the kernel, as a dead server's port is
        (a client with several servers then tries the next one). L{up} listens again.
        """
        self.cut("rst")
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            self._unlisten.append(listener)
            self._wake()

    def up(self) -> None:
        """Listen on the same port again (after L{down})."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.create_server(("127.0.0.1", self.port))
            listener.setblocking(False)
            self._listener = listener
        self._relisten.append(listener)
        self._wake()

    def close(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(10)
        for sock in list(self._pairs):
            self._drop(sock)
        if self._listener is not None:
            self._listener.close()

    # -- the thread ---------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop:
            while self._unlisten:  # (the selector is the thread's: listeners change here)
                listener = self._unlisten.pop()
                self._selector.unregister(listener)
                listener.close()
            while self._relisten:
                self._selector.register(self._relisten.pop(), selectors.EVENT_READ, "listener")
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "wake":
                    self._wake_r.recv(4096)
                elif key.data == "listener":
                    self._accept(key.fileobj)
                elif not self._silent:
                    self._forward(key.fileobj)
            if self._silent:
                # Keep the sockets open but stop reading them: their buffers
                # fill, and TCP on both ends believes the link is alive.
                with self._lock:
                    for sock in list(self._pairs):
                        try:
                            self._selector.unregister(sock)
                        except (KeyError, ValueError):
                            pass

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except (BlockingIOError, OSError):
            return
        self.links += 1
        if self._refusing:
            client.close()
            return
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
        with self._lock:
            self._pairs[client], self._pairs[server] = server, client
        if not self._silent:
            self._selector.register(client, selectors.EVENT_READ, None)
            self._selector.register(server, selectors.EVENT_READ, None)

    def _forward(self, source: socket.socket) -> None:
        with self._lock:
            destination = self._pairs.get(source)
        if destination is None:
            return
        try:
            data = source.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_pair(source)
            return
        try:
            destination.setblocking(True)
            destination.sendall(data)
            destination.setblocking(False)
        except OSError:
            self._close_pair(source)

    def _close_pair(self, sock: socket.socket) -> None:
        with self._lock:
            other = self._pairs.pop(sock, None)
            if other is not None:
                self._pairs.pop(other, None)
        self._drop(sock)
        if other is not None:
            self._drop(other)

    def _drop(self, sock: socket.socket, quietly: bool = False) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        try:
            if quietly:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass
