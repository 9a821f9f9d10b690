"""
TLS through endpoint strings, end to end: C{twistd rpisensor serve|collect
--listen ssl:...} as real processes, with C{rpisensor query tls:...},
C{twistd rpisensor poll|report --connect tls:...} and Python's C{ssl} module
as clients; mutual TLS with C{--client-ca}.

The certificates are made at test time (L{tests.certs}). Only loopback
addresses are used (the server certificate names C{localhost} and
127.0.0.1). Every wait is for a condition with a long deadline; nothing
asserts a duration.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import PKIPaths, escape, write_pki
from tests.processes import (
    DEADLINE,
    FOREGROUND,
    Twistd,
    connect_tcp,
    connect_unix,
    request,
    run_twistd,
    wait_until,
)

RELEASED = "Button released"
#: How the server logs a client refused during the TLS handshake.
REFUSED_TLS = r"Refused (?P<peer>127\.0\.0\.1:\d+): the TLS handshake failed"


def rpisensor_command(*args: str) -> list[str]:
    """The argv running the C{rpisensor} script installed beside C{sys.executable}."""
    script = Path(sys.executable).parent / "rpisensor"
    if script.is_file():
        return [sys.executable, str(script), *args]
    return [sys.executable, "-c", "from rpisensor.app.cli import main; main()", *args]


def run_query(endpoint: str, *messages: str) -> subprocess.CompletedProcess:
    """Run C{rpisensor query ENDPOINT MESSAGES} to its end; stdout and stderr are text."""
    return subprocess.run(
        rpisensor_command("query", "--timeout", str(int(DEADLINE)), endpoint, *messages),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )


def ssl_listener(cert: str, key: str) -> str:
    """An C{ssl:} server endpoint on a free port of 127.0.0.1 with this certificate and key."""
    return f"ssl:0:interface=127.0.0.1:privateKey={escape(key)}:certKey={escape(cert)}"


def tls_client(
    port: int,
    trust_dir: str,
    host: str = "localhost",
    cert: str | None = None,
    key: str | None = None,
    via: str | None = None,
) -> str:
    """
    A C{tls:} client endpoint to C{port}, checking the server's certificate
    against the CAs in C{trust_dir} and the name C{host}; with C{cert} and
    C{key}, presenting a client certificate; with C{via}, connecting through
    that endpoint (then C{host} is only the name checked).
    """
    text = f"tls:host={host}:port={port}:trustRoots={escape(trust_dir)}"
    if cert is not None:
        text += f":certificate={escape(cert)}:privateKey={escape(key)}"
    if via is not None:
        text += f":endpoint={escape(via)}"
    return text


def local_address(sock: socket.socket) -> str:
    """The client socket's own address, as the server's log names its peer."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


class _TLSTestMixin:
    """Certificates in a fresh directory, and C{twistd} children that are always cleaned up."""

    def setUp(self) -> None:
        self.pki: PKIPaths = write_pki(self.mktemp())

    def start(self, *args: str) -> Twistd:
        """Start C{twistd -n rpisensor ARGS}."""
        twistd = Twistd("rpisensor", *args)
        self.addCleanup(twistd.close)
        return twistd

    def start_tls_serve(self, *options: str, wrong_name: bool = False) -> tuple[Twistd, int]:
        """
        Start C{serve --gpio sim} on an C{ssl:} listener of 127.0.0.1 with the
        server certificate (the C{otherhost} one if C{wrong_name}), and
        C{options}; return it and its port.
        """
        pki = self.pki
        if wrong_name:
            listen = ssl_listener(pki.wrong_name_cert, pki.wrong_name_key)
        else:
            listen = ssl_listener(pki.server_cert, pki.server_key)
        twistd = self.start("serve", "--gpio", "sim", "--listen", listen, *options)
        return twistd, twistd.wait_port(listen)

    def assertReplies(self, endpoint: str, *pairs: tuple[str, str]) -> None:
        """
        C{rpisensor query ENDPOINT} with each pair's message prints each pair's reply and exits 0.
        """
        result = run_query(endpoint, *(message for message, _ in pairs))
        expected = "".join(f"{reply}\n" for _, reply in pairs)
        self.assertEqual((result.returncode, result.stdout), (0, expected), result)

    def assertServed(self, port: int) -> None:
        """A client with the right CA and a client certificate gets C{Button released}."""
        pki = self.pki
        self.assertReplies(
            tls_client(port, pki.trust_dir, cert=pki.client_cert, key=pki.client_key),
            ("go", RELEASED),
        )

    def assertQueryFailsWithTLSLine(self, endpoint: str) -> str:
        """
        C{rpisensor query ENDPOINT go} prints no reply, one stderr line about TLS, and exits 1;
        return that line.
        """
        result = run_query(endpoint, "go")
        self.assertEqual((result.returncode, result.stdout), (1, ""), result)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn("TLS", lines[0])
        self.assertNotIn("Traceback", result.stderr)
        return lines[0]


class QueryOverTLSTests(_TLSTestMixin, SynchronousTestCase):
    """C{rpisensor query tls:...} against C{serve --listen ssl:...}."""

    def test_go_over_tls(self) -> None:
        """A query trusting the CA, for host C{localhost}, gets C{Button released} and exits 0."""
        twistd, port = self.start_tls_serve()
        self.assertReplies(tls_client(port, self.pki.trust_dir), ("go", RELEASED), ("ping", "pong"))
        log = twistd.stop_cleanly()
        self.assertRegex(log, r"Client connected from 127\.0\.0\.1:\d+")

    def test_ip_address_in_certificate(self) -> None:
        """C{host=127.0.0.1} is accepted too: the certificate names that address."""
        twistd, port = self.start_tls_serve()
        self.assertReplies(tls_client(port, self.pki.trust_dir, host="127.0.0.1"), ("go", RELEASED))
        twistd.stop_cleanly()

    def test_wrong_hostname(self) -> None:
        """
        A server whose certificate names only C{otherhost} fails a query for C{localhost} with one
        TLS line, and still serves a query for C{otherhost}.
        """
        twistd, port = self.start_tls_serve(wrong_name=True)
        endpoint = tls_client(port, self.pki.trust_dir)
        line = self.assertQueryFailsWithTLSLine(endpoint)
        explanation = line.split(endpoint, 1)[-1]
        self.assertIn("host=", explanation)
        self.assertNotIn("certificate verify failed", explanation)
        self.assertReplies(
            tls_client(port, self.pki.trust_dir, host="otherhost", via=f"tcp:127.0.0.1:{port}"),
            ("go", RELEASED),
        )
        twistd.stop_cleanly()

    def test_ip_address_not_in_certificate(self) -> None:
        """
        C{host=127.0.0.1} against a certificate naming only C{otherhost} fails with one TLS line.
        """
        twistd, port = self.start_tls_serve(wrong_name=True)
        self.assertQueryFailsWithTLSLine(tls_client(port, self.pki.trust_dir, host="127.0.0.1"))
        twistd.stop_cleanly()

    def test_unknown_ca(self) -> None:
        """
        A query trusting only another CA fails with one TLS line; the server then still serves a
        good query.
        """
        twistd, port = self.start_tls_serve()
        line = self.assertQueryFailsWithTLSLine(tls_client(port, self.pki.other_trust_dir))
        self.assertIn("certificate verify failed", line)
        self.assertReplies(tls_client(port, self.pki.trust_dir), ("go", RELEASED))
        twistd.stop_cleanly()

    def test_plain_client_is_refused(self) -> None:
        """
        A plain TCP client speaking the protocol to the TLS listener gets no C{Button released}:
        the server closes it, and logs why without blaming --client-ca, which is not set.
        """
        twistd, port = self.start_tls_serve()
        with connect_tcp(port) as sock:
            address = local_address(sock)
            sock.sendall(b"go\0go\0")  # more than a TLS record header: OpenSSL judges it at once
            received = read_until_closed(sock)
        self.assertNotIn(RELEASED.encode(), received)
        line = twistd.wait_for(rf"Refused {re.escape(address)}: the TLS handshake failed.*").group(0)
        self.assertIn("plain TCP client", line)
        self.assertNotIn("--client-ca", line)
        self.assertReplies(tls_client(port, self.pki.trust_dir), ("go", RELEASED))
        twistd.stop_cleanly()

    def test_plain_client_too_short_to_judge_is_closed_at_the_deadline(self) -> None:
        """
        A plain client whose C{go} is shorter than a TLS record header, on which the server can
        only wait, is closed at --handshake-timeout even with --idle-timeout 0.
        """
        twistd, port = self.start_tls_serve("--handshake-timeout", "1", "--idle-timeout", "0")
        with connect_tcp(port) as sock:
            address = local_address(sock)
            sock.sendall(b"go\0")
            self.assertNotIn(RELEASED.encode(), read_until_closed(sock))
        twistd.wait_for(rf"Closing the connection from {re.escape(address)}: no TLS handshake within 1 s")
        twistd.stop_cleanly()

    def test_half_close_after_go(self) -> None:
        """
        A TLS client that sends C{go} and then its TCP FIN ends its connection (Twisted's TLS does
        not half-close) without an error in the server, which goes on serving.
        """
        twistd, port = self.start_tls_serve()
        context = ssl.create_default_context(cafile=self.pki.ca_cert)
        raw = connect_tcp(port)
        address = local_address(raw)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"go\0")
            socket.socket.shutdown(tls, socket.SHUT_WR)  # the TCP FIN, under the TLS layer
            received = read_until_closed(tls)
        self.assertIn(received, (b"", f"{RELEASED}\0".encode()))
        twistd.wait_for(rf"Client {re.escape(address)} disconnected")
        self.assertReplies(tls_client(port, self.pki.trust_dir), ("go", RELEASED))
        twistd.stop_cleanly()


def read_until_closed(sock) -> bytes:
    """
    Read until the server closes the connection; a reset or a TLS error counts as the close.
    A server that stays silent fails the test (the socket's timeout is the deadline).
    """
    received = b""
    try:
        while block := sock.recv(4096):
            received += block
    except (ConnectionResetError, ssl.SSLError):
        pass
    return received


class MutualTLSTests(_TLSTestMixin, SynchronousTestCase):
    """C{serve --client-ca CA.pem --listen ssl:...}: clients need a certificate the CA signed."""

    def start_mutual(self) -> tuple[Twistd, int]:
        return self.start_tls_serve("--client-ca", self.pki.ca_cert)

    def ssl_exchange(
        self, port: int, cert: str | None = None, key: str | None = None
    ) -> tuple[str, bytes]:
        """
        With Python's C{ssl} (trusting the CA, checking C{localhost}), send
        C{go} and read until the connection ends; return the client's own
        address and everything received. A TLS alert or a reset counts as
        the end.
        """
        context = ssl.create_default_context(cafile=self.pki.ca_cert)
        if cert is not None:
            context.load_cert_chain(cert, key)
        raw = connect_tcp(port)
        address = local_address(raw)
        received = b""
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"go\0")
                while received[-1:] != b"\0" and (block := tls.recv(4096)):
                    received += block
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
        finally:
            raw.close()
        return address, received

    def test_client_with_certificate(self) -> None:
        """A client presenting a certificate signed by the CA gets its replies."""
        twistd, port = self.start_mutual()
        pki = self.pki
        self.assertReplies(
            tls_client(port, pki.trust_dir, cert=pki.client_cert, key=pki.client_key),
            ("go", RELEASED), ("ping", "pong"),
        )  # fmt: skip
        _, received = self.ssl_exchange(port, pki.client_cert, pki.client_key)
        self.assertEqual(received, f"{RELEASED}\0".encode())
        log = twistd.stop_cleanly()
        self.assertNotRegex(log, REFUSED_TLS)

    def assertRefusedInHandshake(
        self, port: int, twistd: Twistd, cert: str | None, key: str | None
    ) -> None:
        """A client with C{cert} gets no reply, and the server logs Refused with its address."""
        address, received = self.ssl_exchange(port, cert, key)
        self.assertEqual(received, b"")
        pattern = rf"Refused {re.escape(address)}: the TLS handshake failed.*"
        line = twistd.wait_for(pattern).group(0)
        self.assertIn("--client-ca", line)
        self.assertNotIn(f"Client {address} disconnected", twistd.log())

    def test_client_without_certificate(self) -> None:
        """
        A client without a certificate is refused during the handshake, logged with its address, and
        a good client is served afterwards.
        """
        twistd, port = self.start_mutual()
        self.assertRefusedInHandshake(port, twistd, None, None)
        self.assertQueryFailsWithTLSLine(tls_client(port, self.pki.trust_dir))
        self.assertServed(port)
        log = twistd.stop_cleanly()
        self.assertEqual(len(re.findall(REFUSED_TLS, log)), 2, log)

    def test_client_from_other_ca(self) -> None:
        """
        A client whose certificate another CA signed is refused during the handshake, logged, and a
        good client is served afterwards.
        """
        twistd, port = self.start_mutual()
        pki = self.pki
        self.assertRefusedInHandshake(port, twistd, pki.other_client_cert, pki.other_client_key)
        self.assertQueryFailsWithTLSLine(
            tls_client(port, pki.trust_dir, cert=pki.other_client_cert, key=pki.other_client_key)
        )
        self.assertServed(port)
        log = twistd.stop_cleanly()
        self.assertEqual(len(re.findall(REFUSED_TLS, log)), 2, log)

    def test_unix_listener_beside_ssl(self) -> None:
        """
        With C{--client-ca}, a C{unix:} listener (allowed by the option) serves local clients
        without a certificate, and the ssl: one still wants one.
        """
        pki = self.pki
        listen = ssl_listener(pki.server_cert, pki.server_key)
        twistd = self.start(
            "serve", "--gpio", "sim", "--client-ca", pki.ca_cert,
            "--listen", "unix:rpisensor.sock", "--listen", listen,
        )  # fmt: skip
        port = twistd.wait_port(listen)
        twistd.wait_listening("unix:rpisensor.sock")
        with connect_unix(os.path.join(twistd.directory, "rpisensor.sock")) as sock:
            self.assertEqual(request(sock, b"go"), f"{RELEASED}\0".encode())
        self.assertServed(port)
        self.assertRefusedInHandshake(port, twistd, None, None)
        twistd.stop_cleanly()


class ClientCABundleTests(_TLSTestMixin, SynchronousTestCase):
    """C{--client-ca} with several CAs in one file, and endpoint types in upper case."""

    def bundle(self, *paths: str) -> str:
        """A PEM file holding the certificates of C{paths}, in order."""
        path = os.path.join(self.pki.directory, "bundle.pem")
        with open(path, "wb") as out:
            for part in paths:
                with open(part, "rb") as f:
                    out.write(f.read())
        return path

    def test_client_of_the_second_ca_in_the_bundle(self) -> None:
        """
        With a bundle of the other CA, then the client's CA, the client is served: every
        certificate of the file is trusted, not only the first.
        """
        pki = self.pki
        twistd, port = self.start_tls_serve("--client-ca", self.bundle(pki.other_ca_cert, pki.ca_cert))
        self.assertServed(port)
        self.assertReplies(
            tls_client(port, pki.trust_dir, cert=pki.other_client_cert, key=pki.other_client_key),
            ("go", RELEASED),
        )
        log = twistd.stop_cleanly()
        self.assertNotRegex(log, REFUSED_TLS)

    def test_upper_case_endpoint_types(self) -> None:
        """C{SSL:} and C{UNIX:} listeners are taken with --client-ca, as ssl: and unix: are."""
        pki = self.pki
        listen = ssl_listener(pki.server_cert, pki.server_key)
        twistd = self.start(
            "serve", "--gpio", "sim", "--client-ca", pki.ca_cert,
            "--listen", "UNIX:rpisensor.sock", "--listen", "SSL" + listen[3:],
        )  # fmt: skip
        port = twistd.wait_port(listen)
        twistd.wait_listening("unix:rpisensor.sock")
        with connect_unix(os.path.join(twistd.directory, "rpisensor.sock")) as sock:
            self.assertEqual(request(sock, b"go"), f"{RELEASED}\0".encode())
        self.assertServed(port)
        twistd.stop_cleanly()


class HandshakeDeadlineTests(_TLSTestMixin, SynchronousTestCase):
    """Peers that never send a ClientHello cannot keep the slots of mutual TLS clients."""

    def test_silent_peers_lose_their_slots(self) -> None:
        """
        Three bare TCP connections fill --max-connections 3 on a --client-ca listener with
        --idle-timeout 0; the server closes them at --handshake-timeout, and a client with a
        certificate is then served.
        """
        twistd, port = self.start_tls_serve(
            "--client-ca", self.pki.ca_cert, "--max-connections", "3",
            "--handshake-timeout", "1", "--idle-timeout", "0",
        )  # fmt: skip
        silent = [connect_tcp(port) for _ in range(3)]
        try:
            for sock in silent:
                self.assertEqual(read_until_closed(sock), b"")  # closed by the server, in time
        finally:
            for sock in silent:
                sock.close()
        self.assertServed(port)
        log = twistd.stop_cleanly()
        self.assertEqual(log.count("no TLS handshake within 1 s (--handshake-timeout)"), 3, log)


class ClientCAOptionTests(_TLSTestMixin, SynchronousTestCase):
    """Mistakes with C{--client-ca} are usage errors, found before anything listens."""

    def assertUsageError(self, *options: str, detail: str) -> None:
        """
        C{serve OPTIONS} exits non-zero at once, without a traceback, its last line naming --client-
        ca and C{detail}.
        """
        exited = run_twistd(*FOREGROUND, "rpisensor", "serve", "--gpio", "sim", *options)
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        self.assertNotIn("Listening on", exited.log)
        last = exited.log.strip().splitlines()[-1]
        self.assertIn("--client-ca", last, exited.log)
        self.assertIn(detail, last, exited.log)

    def test_plain_tcp_listener(self) -> None:
        """C{--client-ca} with a C{tcp:} listener is a usage error naming the listener."""
        self.assertUsageError(
            "--client-ca", self.pki.ca_cert, "--listen", "tcp:0:interface=127.0.0.1",
            detail="tcp:0:interface=127.0.0.1",
        )  # fmt: skip

    def test_tcp_beside_ssl_listener(self) -> None:
        """
        C{--client-ca} with an C{ssl:} and a C{tcp:} listener is a usage error naming the tcp: one.
        """
        pki = self.pki
        self.assertUsageError(
            "--client-ca", pki.ca_cert,
            "--listen", ssl_listener(pki.server_cert, pki.server_key),
            "--listen", "tcp:0:interface=127.0.0.1",
            detail="tcp:0:interface=127.0.0.1",
        )  # fmt: skip

    def test_not_pem(self) -> None:
        """C{--client-ca} naming a file that is not PEM is a usage error naming the file."""
        path = os.path.join(self.pki.directory, "not-a-cert.pem")
        with open(path, "w") as f:
            f.write("this is not a certificate\n")
        pki = self.pki
        self.assertUsageError(
            "--client-ca", path, "--listen", ssl_listener(pki.server_cert, pki.server_key),
            detail=path,
        )  # fmt: skip

    def test_private_key_instead_of_certificate(self) -> None:
        """C{--client-ca} naming a PEM private key rather than a certificate is a usage error."""
        pki = self.pki
        self.assertUsageError(
            "--client-ca", pki.client_key,
            "--listen", ssl_listener(pki.server_cert, pki.server_key),
            detail=pki.client_key,
        )  # fmt: skip

    def test_missing_file(self) -> None:
        """C{--client-ca} naming a file that does not exist is a usage error naming the file."""
        path = os.path.join(self.pki.directory, "missing.pem")
        pki = self.pki
        self.assertUsageError(
            "--client-ca", path, "--listen", ssl_listener(pki.server_cert, pki.server_key),
            detail=path,
        )  # fmt: skip


#: The reconnecting client's line before each new attempt.
RETRY_LINE = re.compile(r"Reconnecting to .* in (?P<delay>[\d.]+) s \(attempt (?P<attempt>\d+)\)")
#: The client's line for a failed handshake: one line, saying what to check.
TLS_FAILED_LINE = re.compile(
    r"Connection to (?P<endpoint>tls:\S+) failed: TLS handshake failed: .*certificate verify "
    r"failed.*Check that trustRoots="
)


class ReconnectingClientTLSTests(_TLSTestMixin, SynchronousTestCase):
    """C{poll --connect tls:...} that cannot verify the server keeps trying, waiting longer."""

    MAX_DELAY = 1

    def run_untrusting_poll(self) -> tuple[str, int]:
        """
        Run C{poll} trusting only the other CA against a TLS server until it
        has scheduled its third retry; stop both and return the poll's log
        (the server must have stayed up and served a good query) and the port.
        """
        server, port = self.start_tls_serve()
        poll = self.start(
            "poll", "--interval", "0.2", "--max-delay", str(self.MAX_DELAY),
            "--connect", tls_client(port, self.pki.other_trust_dir),
        )  # fmt: skip
        poll.wait_for(r"\(attempt 3\)")
        self.assertReplies(tls_client(port, self.pki.trust_dir), ("go", RELEASED))
        exited = poll.stop()
        self.assertEqual(exited.code, 0, exited.log)
        server.stop_cleanly()
        return exited.log, port

    def test_retries_with_growing_attempt_numbers(self) -> None:
        """
        Each failed handshake logs the TLS line and schedules retry 1, 2, 3... within --max-delay
        plus jitter.
        """
        log, port = self.run_untrusting_poll()
        failures = TLS_FAILED_LINE.findall(log)
        self.assertGreaterEqual(len(failures), 3, log)
        self.assertTrue(all(f"port={port}" in endpoint for endpoint in failures), failures)
        self.assertNotIn("Connected to", log)  # a failed handshake is not a connection
        retries = [(int(m["attempt"]), float(m["delay"])) for m in RETRY_LINE.finditer(log)]
        attempts = [attempt for attempt, _ in retries]
        self.assertEqual(attempts, list(range(1, len(attempts) + 1)), log)
        self.assertGreaterEqual(len(attempts), 3, log)
        for _, delay in retries:
            self.assertLessEqual(delay, self.MAX_DELAY + 1, log)
        self.assertNotIn("Message from", log)

    def test_failed_handshake_logs_no_traceback(self) -> None:
        """
        A failed handshake in the reconnecting client leaves no Unhandled Error or traceback in the
        log.
        """
        log, _ = self.run_untrusting_poll()
        errors = re.findall(r"^\t?\w[\w.]*(?:Error|Exception|NoTransition): .*$", log, re.MULTILINE)
        self.assertEqual(
            ("Unhandled Error" in log, "Traceback" in log),
            (False, False),
            f"the poll logged tracebacks ending in: {sorted(set(errors))}",
        )


def read_jsonl(path: str) -> list[dict]:
    """The complete lines of a JSON Lines store so far; [] if it does not exist yet."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


class ReportOverTLSTests(_TLSTestMixin, SynchronousTestCase):
    """C{report --connect tls:...} to C{collect --listen ssl:...}."""

    def run_report(self, *collect_options: str, client_cert: bool = False) -> list[dict]:
        """
        Run a reporter into a TLS collector until 3 messages are stored; stop both; return the
        records.
        """
        pki = self.pki
        store = os.path.join(pki.directory, "readings.jsonl")
        listen = ssl_listener(pki.server_cert, pki.server_key)
        collector = self.start("collect", "--listen", listen, "--store", store, *collect_options)
        port = collector.wait_port(listen)
        connect = tls_client(
            port, pki.trust_dir,
            cert=pki.client_cert if client_cert else None,
            key=pki.client_key if client_cert else None,
        )  # fmt: skip
        reporter = self.start("report", "--gpio", "sim", "--interval", "0.2", "--protocol", "1", "--connect", connect)
        wait_until(
            lambda: len(read_jsonl(store)) >= 3,
            describe=lambda: collector.log() + reporter.log(),
        )
        reporter.stop_cleanly()
        log = collector.stop_cleanly()
        self.assertNotRegex(log, REFUSED_TLS)
        return read_jsonl(store)

    def assertReleasedFromLoopback(self, records: list[dict]) -> None:
        self.assertGreaterEqual(len(records), 3, records)
        self.assertEqual({r["message"] for r in records}, {RELEASED}, records)
        for record in records:
            self.assertRegex(record["peer"], r"^127\.0\.0\.1:\d+$")

    def test_report_to_collect(self) -> None:
        """A reporter trusting the CA has its messages stored by a collector on an ssl: listener."""
        self.assertReleasedFromLoopback(self.run_report())

    def test_report_to_collect_mutual(self) -> None:
        """
        A reporter with a client certificate has its messages stored by a collector requiring one.
        """
        records = self.run_report("--client-ca", self.pki.ca_cert, client_cert=True)
        self.assertReleasedFromLoopback(records)
