"""
C{report}'s v2 options, parsed as twistd parses them: the outbox, the
protocol, the hello timeout, the status listener, and the device taken
from a client certificate. No reactor is run.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.app.tap import Options
from rpisensor.stream.identity import default_device_id
from tests.certs import make_ca, make_leaf, write_pki

CONNECT = ("--connect", "tcp:host=127.0.0.1:port=22000")


def parse(*args: str):
    options = Options()
    options.parseOptions(["report", "--gpio", "sim", *args])
    return options.subOptions


class DefaultsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """auto, 3 s, the outbox and the status socket in the working directory, window 5000."""
        report = parse(*CONNECT)
        here = os.getcwd()
        self.assertEqual(report["protocol"], "auto")
        self.assertEqual(report["hello-timeout"], 3.0)
        self.assertEqual(report["status-listen"], f"unix:address={here}/rpisensor-report.sock:lockfile=0")
        settings = report.journal_settings()
        self.assertEqual(str(settings.path), os.path.join(here, "rpisensor-outbox.sqlite"))
        self.assertEqual((settings.max_entries, settings.max_bytes, settings.sync, settings.window),
                         (1_000_000, None, "batch", 5000))  # fmt: skip
        self.assertEqual(report.device_id(), default_device_id())

    def test_state_directory(self) -> None:
        """Under systemd (STATE_DIRECTORY), the outbox and the status socket go there."""
        directory = "/var/lib/rpisensor"  # (only named: nothing is opened)
        os.environ["STATE_DIRECTORY"] = directory
        self.addCleanup(os.environ.pop, "STATE_DIRECTORY")
        report = parse(*CONNECT)
        self.assertEqual(report["status-listen"], f"unix:address={directory}/rpisensor-report.sock:lockfile=0")
        self.assertEqual(str(report.journal_settings().path), f"{directory}/rpisensor-outbox.sqlite")


    def test_state_directory_too_deep_for_a_socket(self) -> None:
        """A working directory too deep for a unix socket's path: no status listener, said at start."""
        directory = "/" + "d" * 100
        os.environ["STATE_DIRECTORY"] = directory
        self.addCleanup(os.environ.pop, "STATE_DIRECTORY")
        report = parse(*CONNECT)
        self.assertIsNone(report["status-listen"])
        self.assertIn(f"its default socket {directory}/rpisensor-report.sock is longer", report.status_problem)
        self.assertIsNone(parse(*CONNECT, "--status-listen", "tcp:22001").status_problem)


class OptionTests(SynchronousTestCase):
    def assertUsageError(self, *args: str, text: str) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            parse(*CONNECT, *args)
        self.assertIn(text, str(raised.exception))

    def test_protocol(self) -> None:
        """--protocol takes auto, 1 or 2."""
        for value in ("auto", "1", "2"):
            self.assertEqual(parse(*CONNECT, "--protocol", value)["protocol"], value)
        self.assertUsageError("--protocol", "3", text="--protocol must be auto, 1 or 2, got '3'")

    def test_hello_timeout(self) -> None:
        self.assertEqual(parse(*CONNECT, "--hello-timeout", "10")["hello-timeout"], 10.0)
        self.assertUsageError("--hello-timeout", "0", text="--hello-timeout must be more than 0 seconds")
        self.assertUsageError("--hello-timeout", "x", text="--hello-timeout must be a number of seconds")

    def test_status_listen(self) -> None:
        """none turns it off; tcp: is kept; an absolute unix: path is kept, without a pid lock file."""
        self.assertIsNone(parse(*CONNECT, "--status-listen", "none")["status-listen"])
        self.assertEqual(parse(*CONNECT, "--status-listen", "tcp:22001:interface=127.0.0.1")["status-listen"],
                         "tcp:22001:interface=127.0.0.1")  # fmt: skip
        self.assertEqual(parse(*CONNECT, "--status-listen", "UNIX:/run/r.sock:mode=600")["status-listen"],
                         "unix:address=/run/r.sock:mode=600:lockfile=0")  # fmt: skip
        self.assertUsageError("--status-listen", "22001", text="did you mean tcp:22001?")

    def test_outbox_options(self) -> None:
        """The outbox options of the journal mixin, and 'none' for memory only."""
        report = parse(*CONNECT, "--outbox", "none", "--outbox-max", "50MB", "--outbox-sync", "full",
                       "--window", "20", "--device", "greenhouse")  # fmt: skip
        settings = report.journal_settings()
        self.assertEqual((settings.path, settings.max_bytes, settings.sync, settings.window, settings.device),
                         (None, 50_000_000, "full", 20, "greenhouse"))  # fmt: skip
        self.assertEqual(report.device_id(), "greenhouse")


class CertificateDeviceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = write_pki(self.mktemp())

    def connect(self, cert: str, key: str) -> tuple[str, str]:
        return ("--connect", f"tls:host=localhost:port=22443:trustRoots={self.pki.trust_dir}"
                             f":certificate={cert}:privateKey={key}")  # fmt: skip

    def test_device_defaults_to_the_certificate_cn(self) -> None:
        """With a tls: client certificate, the device is its CN: what a collector with --client-ca wants."""
        ca, ca_key, ca_cert = make_ca("test CA")
        leaf = make_leaf(ca_key, ca_cert, "pi-kitchen", server=False)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        for path, data in ((cert, leaf.cert_pem), (key, leaf.key_pem)):
            with open(path, "wb") as f:
                f.write(data)
        report = parse(*self.connect(cert, key))
        self.assertEqual(report.device_id(), "pi-kitchen")
        self.assertIsNone(report.unusable_cn)
        self.assertEqual(parse(*self.connect(cert, key), "--device", "other").device_id(), "other")

    def test_a_cn_that_cannot_be_a_device(self) -> None:
        """A CN with spaces is no device id: the default id is used, and the start-up will say why."""
        report = parse(*self.connect(self.pki.client_cert, self.pki.client_key))
        self.assertEqual(report.unusable_cn, "rpisensor test client")
        self.assertEqual(report.device_id(), default_device_id())

    def test_without_certificate(self) -> None:
        report = parse("--connect", f"tls:host=localhost:port=22443:trustRoots={self.pki.trust_dir}")
        self.assertEqual(report.device_id(), default_device_id())
