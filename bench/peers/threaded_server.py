"""
Peer: the tutorial's DataServer1 style, a thread per connection.

Each connection's thread blocks in recv(), splits NUL-terminated messages and
answers each one inline; "go" sleeps the read latency in that same thread, as
the tutorial reads the pin inline. Usage: python threaded_server.py --port 0 --latency 0.05
"""

from __future__ import annotations

import signal
import socket
import threading

from common import SimulatedButton, announce, answer, parse_args, report_counters


def serve_connection(conn: socket.socket, button: SimulatedButton) -> None:
    buffer = b""
    with conn:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while True:
                end = buffer.find(b"\0")
                if end < 0:
                    break
                body, buffer = buffer[:end], buffer[end + 1 :]
                reply = answer(body, button)
                if reply is not None:
                    try:
                        conn.sendall(reply.encode("utf-8") + b"\0")
                    except OSError:
                        return
            if len(buffer) > 16 * 1024:  # same limit as rpisensor's default
                return


def main() -> None:
    args = parse_args(__doc__)
    button = SimulatedButton(args.latency)
    signal.signal(signal.SIGUSR2, lambda *_: report_counters(button))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen()
    announce(listener.getsockname()[1])
    threading.stack_size(256 * 1024)  # 1,000+ threads without 8 MiB stacks each
    try:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve_connection, args=(conn, button), daemon=True).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
