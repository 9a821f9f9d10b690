"""
End to end: C{twistd rpisensor ...} and C{twistd -ny tac/serve.tac} run as
real processes, with plain blocking sockets as clients, written like the
tutorial's DataClient1 (C{sendall(b"go\\0")}, then C{recv} until a NUL).

Only loopback addresses are used. Every wait is for a condition, with a
long deadline (L{tests.processes.DEADLINE}); nothing asserts a duration.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import (
    FOREGROUND,
    Twistd,
    connect_tcp,
    connect_unix,
    request,
    run_twistd,
)

LOOPBACK = "tcp:0:interface=127.0.0.1"
RELEASED = b"Button released\0"
SERVE_OPTIONS = (
    "--listen",
    "--input",
    "--gpio",
    "--numbering",
    "--max-message-bytes",
    "--sim-latency",
    "--sim-fail-every",
    "--read-threads",
    "--max-age",
)
SERVE_TAC = Path(__file__).resolve().parent.parent / "tac" / "serve.tac"


class _TwistdTestMixin:
    """Starts C{twistd} children that are always killed and cleaned up."""

    def start(self, *args: str, env: dict[str, str] | None = None) -> Twistd:
        twistd = Twistd(*args, env=env)
        self.addCleanup(twistd.close)
        return twistd

    def start_rpisensor(self, *args: str) -> tuple[Twistd, int]:
        """Start C{twistd -n rpisensor ARGS} listening on loopback; return it and its port."""
        twistd = self.start("rpisensor", *args, "--listen", LOOPBACK)
        return twistd, twistd.wait_port(LOOPBACK)

    def assertStopsCleanly(self, twistd: Twistd) -> str:
        """
        SIGTERM ends C{twistd} with status 0 after a complete shutdown and with
        no traceback; return its log.
        """
        log = twistd.stop_cleanly()
        self.assertIn("Server Shut Down", log)
        return log


class ServeTests(_TwistdTestMixin, SynchronousTestCase):
    """C{twistd -n rpisensor serve --gpio sim}, started as a user would."""

    def test_go_gets_button_released(self) -> None:
        """A DataClient1-style C{go} gets exactly C{Button released}: the pull-up button is up."""
        twistd, port = self.start_rpisensor("serve", "--gpio", "sim")
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
        self.assertStopsCleanly(twistd)

    def test_several_go_in_a_row(self) -> None:
        """Each of several C{go} sent one after another on one connection gets its own reply."""
        twistd, port = self.start_rpisensor("serve", "--gpio", "sim")
        with connect_tcp(port) as sock:
            replies = [request(sock, b"go") for _ in range(5)]
        self.assertEqual(replies, [RELEASED] * 5)
        self.assertStopsCleanly(twistd)

    def test_several_go_in_one_send(self) -> None:
        """Three C{go} sent in one C{sendall} get three replies."""
        twistd, port = self.start_rpisensor("serve", "--gpio", "sim")
        with connect_tcp(port) as sock:
            sock.sendall(b"go\0go\0go\0")
            data = b""
            while data.count(b"\0") < 3:
                block = sock.recv(4096)
                self.assertTrue(block, f"connection closed after {data!r}")
                data += block
        self.assertEqual(data, RELEASED * 3)
        self.assertStopsCleanly(twistd)

    def test_sigterm_stops_cleanly(self) -> None:
        """SIGTERM, with a client still connected, shuts twistd down cleanly, closing the client."""
        twistd, port = self.start_rpisensor("serve", "--gpio", "sim")
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
            self.assertStopsCleanly(twistd)
            self.assertEqual(sock.recv(4096), b"")

    def test_log_names_client_address(self) -> None:
        """The log says when a client connects and disconnects, with its address."""
        twistd, port = self.start_rpisensor("serve", "--gpio", "sim")
        with connect_tcp(port) as sock:
            host, client_port = sock.getsockname()[:2]
            request(sock, b"go")
        peer = f"{host}:{client_port}"
        twistd.wait_for(re.escape(f"Client {peer} disconnected"))
        log = self.assertStopsCleanly(twistd)
        self.assertIn(f"Client connected from {peer}", log)
        self.assertLess(
            log.index(f"Client connected from {peer}"), log.index(f"Client {peer} disconnected")
        )


class DefaultSubCommandTests(_TwistdTestMixin, SynchronousTestCase):
    """C{twistd -n rpisensor --gpio sim ...}: options without C{serve}."""

    def test_options_without_serve(self) -> None:
        """Serve options given without the C{serve} sub-command run the server all the same."""
        twistd, port = self.start_rpisensor("--gpio", "sim")
        with connect_tcp(port) as sock:
            self.assertEqual([request(sock, b"go") for _ in range(3)], [RELEASED] * 3)
        self.assertStopsCleanly(twistd)


class BadOptionTests(SynchronousTestCase):
    """Bad serve options stop twistd at once with one message naming the option."""

    def assertRefused(self, options: list[str], option: str, detail: str) -> None:
        exited = run_twistd(*FOREGROUND, "rpisensor", "serve", *options)
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        message = exited.log.strip().splitlines()[-1]
        self.assertIn(option, message, exited.log)
        self.assertIn(detail, message, exited.log)

    def test_power_pin(self) -> None:
        """C{--input button=1}, a power pin, is refused naming C{--input}."""
        self.assertRefused(
            ["--gpio", "sim", "--listen", LOOPBACK, "--input", "button=1"],
            "--input",
            "pin 1",
        )

    def test_unknown_gpio_backend(self) -> None:
        """C{--gpio bogus} is refused naming C{--gpio}."""
        self.assertRefused(["--gpio", "bogus", "--listen", LOOPBACK], "--gpio", "bogus")

    def test_unknown_numbering(self) -> None:
        """C{--numbering x} is refused naming C{--numbering}."""
        self.assertRefused(
            ["--gpio", "sim", "--listen", LOOPBACK, "--numbering", "x"], "--numbering", "'x'"
        )

    def test_bad_endpoint(self) -> None:
        """C{--listen nonsense:} is refused naming C{--listen}."""
        self.assertRefused(["--gpio", "sim", "--listen", "nonsense:"], "--listen", "nonsense")


class PortInUseTests(SynchronousTestCase):
    """A listen endpoint that is already taken."""

    def test_port_in_use(self) -> None:
        """Listening on a port in use exits non-zero with one C{cannot listen on} line."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            description = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            exited = run_twistd(
                *FOREGROUND, "rpisensor", "serve", "--gpio", "sim", "--listen", description
            )
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        lines = [line for line in exited.log.splitlines() if "cannot listen on" in line]
        self.assertEqual(len(lines), 1, exited.log)
        self.assertIn(description, lines[0])


class HelpTests(SynchronousTestCase):
    """C{--help} of the plugin and of C{serve}."""

    def assertHelpListsServeOptions(self, *args: str) -> None:
        exited = run_twistd(*args)
        self.assertEqual(exited.code, 0, exited.log)
        missing = [option for option in SERVE_OPTIONS if option not in exited.log]
        self.assertEqual(missing, [], exited.log)

    def test_plugin_help(self) -> None:
        """C{twistd rpisensor --help} exits 0 and mentions every serve option."""
        self.assertHelpListsServeOptions("rpisensor", "--help")

    def test_serve_help(self) -> None:
        """C{twistd rpisensor serve --help} exits 0 and mentions every serve option."""
        self.assertHelpListsServeOptions("rpisensor", "serve", "--help")


class ServeTacTests(_TwistdTestMixin, SynchronousTestCase):
    """C{twistd -ny tac/serve.tac}, configured through the environment."""

    def test_serve_tac(self) -> None:
        """C{tac/serve.tac} obeys C{RPISENSOR_LISTEN} and C{RPISENSOR_GPIO}; C{go} is answered."""
        if not SERVE_TAC.is_file():
            raise SkipTest(f"{SERVE_TAC} does not exist yet")
        twistd = self.start(
            "-y",
            str(SERVE_TAC),
            env={"RPISENSOR_LISTEN": LOOPBACK, "RPISENSOR_GPIO": "sim"},
        )
        port = twistd.wait_port(LOOPBACK)
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
        self.assertStopsCleanly(twistd)


class UnixSocketTests(_TwistdTestMixin, SynchronousTestCase):
    """C{--listen unix:PATH}."""

    def test_unix_socket(self) -> None:
        """A client on a unix socket gets C{Button released} for C{go}."""
        # A short directory of our own: unix socket paths are limited to ~100 bytes.
        directory = tempfile.mkdtemp(prefix="rpisensor-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "sensor.sock")
        twistd = self.start("rpisensor", "serve", "--gpio", "sim", "--listen", f"unix:{path}")
        twistd.wait_listening(f"unix:{path}")
        with connect_unix(path) as sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
        self.assertStopsCleanly(twistd)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return False
        raise
    return True


class IPv6Tests(_TwistdTestMixin, SynchronousTestCase):
    """C{--listen tcp6:0:interface=\\:\\:1}."""

    def test_tcp6_loopback(self) -> None:
        """A C{tcp6} listener on C{::1} answers C{go} with C{Button released}."""
        if not _has_ipv6_loopback():
            raise SkipTest("this machine has no IPv6 loopback (::1)")
        description = r"tcp6:0:interface=\:\:1"
        twistd = self.start("rpisensor", "serve", "--gpio", "sim", "--listen", description)
        port = twistd.wait_port(description)
        with connect_tcp(port, host="::1") as sock:
            self.assertEqual(request(sock, b"go"), RELEASED)
        self.assertStopsCleanly(twistd)
