"""
The client roles' command line (C{poll}, C{report}, via the twistd plugin's
Options): endpoints written as HOST:PORT, hints for endpoint typos, unchecked
C{ssl:} refused, and C{--dead-peer-timeout}. No reactor is run.
"""

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.app.tap import Options
from rpisensor.roles.poll.options import PollOptions
from rpisensor.roles.poll.service import make_service


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class ConnectTests(SynchronousTestCase):
    def assertUsageError(self, *args: str, text: str) -> str:
        with self.assertRaises(usage.UsageError) as raised:
            parse(*args)
        self.assertIn(text, str(raised.exception))
        return str(raised.exception)

    def test_host_port(self):
        """C{--connect HOST:PORT} and C{[V6]:PORT} mean tcp:host=HOST:port=PORT."""
        self.assertEqual(parse("poll", "--connect", "192.168.0.17:22000").subOptions["connect"],
                         ("tcp:host=192.168.0.17:port=22000",))  # fmt: skip
        self.assertEqual(parse("report", "--gpio", "sim", "--connect", "pi.local:22000").subOptions["connect"],
                         ("tcp:host=pi.local:port=22000",))  # fmt: skip
        self.assertEqual(parse("poll", "--connect", "[::1]:22000").subOptions["connect"],
                         (r"tcp:host=\:\:1:port=22000",))  # fmt: skip

    def test_several_servers(self):
        """C{--connect} more than once: every one, checked, in the order given."""
        self.assertEqual(
            parse("report", "--gpio", "sim", "--connect", "collect-a:22000", "--connect", "collect-b:22000")
            .subOptions["connect"],
            ("tcp:host=collect-a:port=22000", "tcp:host=collect-b:port=22000"),
        )
        self.assertUsageError("report", "--gpio", "sim", "--connect", "collect-a:22000", "--connect", "22000",
                              text="did you mean tcp:host=HOST:port=22000")  # fmt: skip

    def test_endpoint_strings_unchanged(self):
        """Real endpoint strings are kept as given."""
        for description in ("tcp:host=127.0.0.1:port=22000", "unix:path=/run/rpisensor.sock"):
            self.assertEqual(parse("poll", "--connect", description).subOptions["connect"], (description,))

    def test_typos_get_a_hint(self):
        """A bare port or host, the common typos, get the right form in the message."""
        self.assertUsageError("poll", "--connect", "22000", text="did you mean tcp:host=HOST:port=22000")
        self.assertUsageError("poll", "--connect", "pi.local", text="did you mean tcp:host=pi.local:port=22000")
        self.assertUsageError("serve", "--listen", "22106", text="did you mean tcp:22106?")
        self.assertUsageError("serve", "--listen", "127.0.0.1:22106",
                              text="did you mean tcp:22106:interface=127.0.0.1?")  # fmt: skip

    def test_a_url_gets_an_endpoint_hint(self):
        """--web http:8080 is not a host named http: the hint is tcp:8080."""
        message = self.assertUsageError("serve", "--web", "http:8080", text="did you mean tcp:8080?")
        self.assertNotIn("interface=http", message)
        self.assertUsageError("serve", "--web", "http://0.0.0.0:8080", text="did you mean tcp:8080:interface=0.0.0.0?")
        self.assertUsageError("serve", "--web", "https:8443", text="did you mean ssl:8443:privateKey=key.pem")

    def test_systemd_outside_systemd(self):
        """Without sockets from systemd, a systemd: endpoint says so, not 'list index out of range'."""
        import os

        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k not in ("LISTEN_PID", "LISTEN_FDS")})
        message = self.assertUsageError("serve", "--listen", "systemd:domain=INET:index=0",
                                        text="systemd handed this process no socket")  # fmt: skip
        self.assertNotIn("list index", message)
        self.patch(os, "environ", {**os.environ, "LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
        self.assertUsageError("serve", "--listen", "systemd:domain=INET:index=2",
                              text="systemd handed over 1 socket, numbered from 0; index=2 is not one of them")

    def test_unchecked_ssl_refused(self):
        """
        C{ssl:} without caCertsDir= and hostname= checks nothing: refused, pointing at tls:;
        with both it is accepted.
        """
        message = self.assertUsageError("poll", "--connect", "ssl:host=pi.example.org:port=22443",
                                        text="tls:host=HOST:port=PORT")  # fmt: skip
        self.assertIn("checks no certificate at all", message)
        self.assertUsageError("poll", "--connect", "SSL:host=pi.example.org:port=22443:caCertsDir=/etc/ssl/certs",
                              text="hostname=")  # fmt: skip
        self.assertUsageError("poll", "--connect", "ssl:host=pi.example.org:port=22443:hostname=pi.example.org",
                              text="caCertsDir=")  # fmt: skip
        checked = "ssl:host=pi.example.org:port=22443:caCertsDir=/etc/ssl/certs:hostname=pi.example.org"
        self.assertEqual(parse("poll", "--connect", checked).subOptions["connect"], (checked,))


class DeadPeerTimeoutTests(SynchronousTestCase):
    def test_default_and_help(self):
        """30 s by default, shown in --help."""
        self.assertEqual(parse("poll", "--connect", "pi:22000").subOptions["dead-peer-timeout"], 30.0)
        help_text = str(PollOptions())
        self.assertIn("--dead-peer-timeout=", help_text)
        self.assertIn("[default: 30]", help_text.split("--dead-peer-timeout=")[1])

    def test_values(self):
        """0 turns it off; under two seconds, or negative, is a usage error."""
        self.assertEqual(parse("report", "--gpio", "sim", "--connect", "pi:1", "--dead-peer-timeout", "0")
                         .subOptions["dead-peer-timeout"], 0.0)  # fmt: skip
        for bad in ("0.5", "1.5", "-1", "soon"):
            with self.assertRaises(usage.UsageError) as raised:
                parse("poll", "--connect", "pi:1", "--dead-peer-timeout", bad)
            self.assertIn("--dead-peer-timeout", str(raised.exception))

    def test_reaches_the_client(self):
        """The option sets the client's dead-peer policy; 0 leaves it without one."""
        service = make_service(parse("poll", "--connect", "pi:1", "--dead-peer-timeout", "45").subOptions,
                               MemoryReactorClock())  # fmt: skip
        self.assertEqual(service.endpoint.dead_peer.timeout, 45.0)
        service = make_service(parse("poll", "--connect", "pi:1", "--dead-peer-timeout", "0").subOptions,
                               MemoryReactorClock())  # fmt: skip
        self.assertIsNone(service.endpoint.dead_peer)
