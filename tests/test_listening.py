"""
L{rpisensor.net.listening.ListenerService}: one line per listener, under a
public log namespace; and when a server role cannot listen, C{twistd} ends
at once with one line saying why, as a daemon (without C{-n}: before, its
parent waited forever) and in the foreground, leaving no pid file, while in
process L{ListenerService.when_listening} fails instead of never firing.
"""

from __future__ import annotations

import os
import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net import listening
from rpisensor.net.listening import CannotListen, ListenerService
from tests.processes import daemon_child_done, run_twistd


class BusyPort:
    """A loopback port some other program listens on."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        test.addCleanup(self.socket.close)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(1)
        self.port = self.socket.getsockname()[1]
        self.description = f"tcp:{self.port}:interface=127.0.0.1"


class PortInUseTests(SynchronousTestCase):
    """C{twistd rpisensor serve --listen} a busy port, with the default pid file."""

    def run_serve(self, *twistd_options: str):
        """Run serve on the busy port in a fresh directory; return how it ended and the directory."""
        busy = BusyPort(self)
        directory = self.mktemp()
        os.makedirs(directory)
        exited = run_twistd(
            *twistd_options, "rpisensor", "serve", "--gpio", "sim", "--listen", busy.description,
            cwd=directory,
        )  # fmt: skip
        return exited, directory, busy

    def test_daemon_ends_at_once(self) -> None:
        """
        Without C{-n}, twistd exits non-zero within the deadline (it used to wait forever) with one
        error line naming the port, removes its pid file, and its log says the whole of it.
        """
        exited, directory, busy = self.run_serve()  # run_twistd fails the test if it hangs
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        errors = [line for line in exited.log.splitlines() if "cannot listen on" in line]
        self.assertEqual(len(errors), 1, exited.log)
        self.assertIn(f"127.0.0.1 port {busy.port}: address already in use", errors[0])
        whole = (
            f"rpisensor: cannot listen on {busy.description}: address already in use "
            "(is another server using it? choose another with --listen)"
        )
        log = daemon_child_done(
            os.path.join(directory, "rpisensor-serve.pid"), os.path.join(directory, "rpisensor-serve.log"), whole
        )
        self.assertNotIn("Traceback", log)

    def test_foreground_ends_with_one_line(self) -> None:
        """With C{-n}, one line says which listener and why, without a traceback; no pid file stays."""
        exited, directory, busy = self.run_serve("-n")
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertNotIn("Traceback", exited.log)
        errors = [line for line in exited.log.splitlines() if "cannot listen on" in line]
        self.assertEqual(len(errors), 1, exited.log)
        self.assertIn(f"cannot listen on {busy.description}: address already in use", errors[0])
        self.assertIn("choose another with --listen", errors[0])
        self.assertFalse(os.path.exists(os.path.join(directory, "rpisensor-serve.pid")))


    def test_a_busy_web_port_names_web(self) -> None:
        """The advice names the option that gave the endpoint: --web, not --listen."""
        busy = BusyPort(self)
        exited = run_twistd(
            "-n", "--pidfile=", "rpisensor", "serve", "--gpio", "sim", "--journal", "none",
            "--listen", "tcp:0:interface=127.0.0.1", "--web", busy.description,
        )  # fmt: skip
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertIn(
            f"rpisensor: cannot listen on {busy.description}: address already in use (is another server "
            "using it? choose another with --web)", exited.log,
        )  # fmt: skip
        self.assertNotIn("--listen)", exited.log)


class WhenListeningTests(SynchronousTestCase):
    """L{ListenerService.when_listening} also fires when listening fails."""

    def test_fails_with_the_reason(self) -> None:
        """A caller waiting before the start gets the failure; one asking after gets it too."""
        busy = BusyPort(self)
        service = ListenerService(reactor, busy.description, Factory())
        waiting = service.when_listening()
        with self.assertRaises(CannotListen) as raised:
            service.privilegedStartService()
        self.assertIsInstance(raised.exception, Exception)  # what twistd reports to its parent
        self.assertIn(f"cannot listen on 127.0.0.1 port {busy.port}", str(raised.exception))
        self.failureResultOf(waiting, CannotListenError)
        self.failureResultOf(service.when_listening(), CannotListenError)

    def test_failure_that_comes_later(self) -> None:
        """
        An endpoint that fails after the start (as a slow one may) fails when_listening and logs
        one critical line saying so, not a traceback.
        """
        later: Deferred = Deferred()

        class SlowEndpoint:
            def listen(self, factory):
                return later

        self.patch(listening, "serverFromString", lambda reactor, description: SlowEndpoint())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = ListenerService(reactor, "tcp:22000", Factory())
        service.privilegedStartService()  # nothing known yet: no error now
        waiting = service.when_listening()
        later.errback(CannotListenError("", 22000, OSError(98, "Address already in use")))
        self.failureResultOf(waiting, CannotListenError)
        [line] = [formatEvent(e) for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(line, "Cannot listen on tcp:22000: address already in use. Nothing listens there.")
        self.assertEqual([e for e in events if "log_failure" in e], [])
        self.successResultOf(service.stopService())


@pytest_twisted.ensureDeferred
async def test_one_line_per_listener(reactor):
    """
    Listening logs one line of ours, naming the endpoint as given and the port it got, under the
    module's namespace (no internal class name).
    """
    events = []
    globalLogPublisher.addObserver(events.append)
    service = ListenerService(reactor, "TCP:0:interface=127.0.0.1", Factory())
    try:
        service.startService()
        port = (await service.when_listening()).getHost().port
    finally:
        globalLogPublisher.removeObserver(events.append)
        await service.stopService()
    ours = [e for e in events if e.get("log_namespace", "").startswith("rpisensor")]
    assert [formatEvent(e) for e in ours] == [f"Listening on tcp:0:interface=127.0.0.1 (port {port})"]
    assert ours[0]["log_namespace"] == "rpisensor.net.listening"
