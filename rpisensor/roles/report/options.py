"""
The command line of C{report}.
"""

from __future__ import annotations

import os
import re

from twisted.python import usage

from rpisensor.roles._options import ConnectOptions, GPIOOptions, non_negative_float
from rpisensor.roles._options.base import check_endpoint
from rpisensor.roles._options.journal import journal_options, state_directory
from rpisensor.roles._options.mqtt import MQTTOptions

#: How report speaks: negotiate, plain text only (v1), or streams only (v2).
PROTOCOLS = ("auto", "1", "2")
DEFAULT_HELLO_TIMEOUT = 3.0
#: The status listener's socket, in the state directory (as the outbox).
DEFAULT_STATUS_SOCKET = "rpisensor-report.sock"
#: The longest path of a unix socket on Linux (sun_path holds 108 bytes, NUL included).
MAX_UNIX_PATH = 107

_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")

#: Readings in flight to the collector: a catch-up after an outage goes about a fifth
#: faster than with 1,000 (fewer hand-overs between the two ends per reading; see
#: docs/performance/streams.md), for about a megabyte held in memory while it lasts.
DEFAULT_WINDOW = 5000

OutboxOptions = journal_options(
    "outbox", "rpisensor-outbox.sqlite", "holding the readings until the collector has them", DEFAULT_WINDOW
)


class ReportOptions(MQTTOptions, GPIOOptions, ConnectOptions, OutboxOptions):
    """C{report}: push the inputs' state to a server."""

    synopsis = "--connect ENDPOINT | --mqtt URL [options]"
    longdesc = (
        "Read the inputs every 2 s and send them to a collector, each reading numbered "
        "and kept in the outbox until the collector has stored it (rpisensor protocol v2: "
        "every reading arrives exactly once, also after link drops and restarts). A server "
        "that does not speak v2, such as the tutorial's DataServer3, gets the plain text "
        "('Button pressed' / 'Button released') as from DataClient3. With --mqtt instead of "
        "--connect, every reading goes to an MQTT broker and the Pi appears in Home Assistant. "
        "Examples: twistd -n rpisensor report --connect tcp:host=myhome.example.org:port=22000  "
        "twistd -n rpisensor report --mqtt mqtt://homeassistant.local"
    )
    optFlags = [
        ["on-change", None, "Record and send only changes (plain text: plus every input's state each --heartbeat seconds)."],
    ]
    optParameters = [
        ["heartbeat", None, "60",
         "Plain text (v1) with --on-change: seconds between full-state messages. "
         "Example: --heartbeat 30"],
        ["protocol", None, "auto",
         "auto: offer v2 (one 'hello' message) and use plain text if the server does not "
         "answer it within --hello-timeout or answers with an error; 2: only v2 (a server "
         "that does not speak it is left, and tried again later); 1: only plain text, no "
         "'hello' (readings are not acknowledged). Example: --protocol 2"],
        ["hello-timeout", None, f"{DEFAULT_HELLO_TIMEOUT:g}",
         "Seconds to wait for the server's answer to 'hello' before using plain text. "
         "Example: --hello-timeout 10"],
        ["outbox-keep", None, "0",
         "How long the outbox keeps a reading after the collector acknowledged it, as seconds "
         "or with a unit (30m, 12h, 2d): a collector restored from a backup that old is then "
         "refilled from the Pi instead of recording a gap. 0: let go once acknowledged. "
         "Example: --outbox-keep 1d"],
        ["status-listen", None, f"unix:{DEFAULT_STATUS_SOCKET}",
         "Where to answer 'rpisensor query ENDPOINT status' (outbox, acknowledgements, link), "
         "as a server endpoint; a relative unix: path is in the state directory, as the "
         "outbox; 'none': no status listener. Example: --status-listen tcp:22001:interface=127.0.0.1"],
    ]  # fmt: skip

    def connect_required(self) -> bool:
        return not self["mqtt"]

    def postOptions(self) -> None:
        super().postOptions()
        self["heartbeat"] = non_negative_float("heartbeat", self["heartbeat"])
        if self["heartbeat"] <= 0:
            raise usage.UsageError("--heartbeat must be more than 0 seconds")
        if self["protocol"] not in PROTOCOLS:
            raise usage.UsageError(f"--protocol must be auto, 1 or 2, got {self['protocol']!r}")
        self["outbox-keep"] = parse_duration("outbox-keep", self["outbox-keep"])
        self["hello-timeout"] = non_negative_float("hello-timeout", self["hello-timeout"])
        if self["hello-timeout"] <= 0:
            raise usage.UsageError("--hello-timeout must be more than 0 seconds")
        default = self["status-listen"] == f"unix:{DEFAULT_STATUS_SOCKET}"
        self["status-listen"] = status_endpoint(self["status-listen"])
        #: Why the default status listener is left out, if it is (said at start-up).
        self.status_problem: str | None = None
        path = state_directory() / DEFAULT_STATUS_SOCKET
        if default and len(os.fsencode(path)) > MAX_UNIX_PATH:
            # A unix socket's path has a hard limit; a deep working directory must
            # not keep the reporter from starting for a listener nobody asked for.
            self.status_problem = (
                f"no status listener: its default socket {path} is longer than a unix socket's path "
                f"may be ({MAX_UNIX_PATH} bytes); give --status-listen with a shorter one"
            )
            self["status-listen"] = None
        #: A client certificate's CN that cannot be a device id (the start-up says so).
        self.unusable_cn: str | None = None
        if self["device"] is None:
            cn = next(filter(None, map(certificate_cn, self["connect"])), None)
            if cn is not None and _DEVICE.match(cn):
                self["device"] = cn
            else:
                self.unusable_cn = cn

    def device_id(self) -> str:
        """C{--device}, else the client certificate's CN, else the host's default id."""
        if self["device"] is not None:
            return self["device"]
        from rpisensor.stream.identity import default_device_id

        return default_device_id()


_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d)?\s*\Z", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(option: str, text: str) -> float:
    """C{"90"} (seconds), C{"30m"}, C{"12h"} or C{"2d"}: seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise usage.UsageError(f"--{option} must be seconds or a duration such as 30m, 12h or 2d, got {text!r}")
    return float(match.group(1)) * _SECONDS[(match.group(2) or "s").lower()]


def status_endpoint(description: str) -> str | None:
    """
    C{--status-listen} as it will be listened on: C{None} for C{none}; a
    C{unix:} path that is relative is taken in the state directory.
    """
    from rpisensor.net.tls import endpoint_type, parse_description, with_lower_case_type

    if description.strip().lower() == "none":
        return None
    description = with_lower_case_type(description.strip())
    if endpoint_type(description) == "unix":
        description = _in_state_directory(description, parse_description)
    check_endpoint("status-listen", description, "serverFromString")
    return description


def _in_state_directory(description: str, parse_description) -> str:
    """
    A C{unix:} endpoint with its relative path taken in the state directory,
    and without Twisted's pid lock file unless asked for (C{lockfile=1}):
    the status service removes a socket left by a killed reporter itself,
    safely, since a pid in a lock file can belong to another program after
    a reboot (see L{rpisensor.roles.report.status.StatusListenerService}).
    """
    from twisted.internet.endpoints import quoteStringArgument

    try:
        args, kwargs = parse_description(description)
    except ValueError as e:
        raise usage.UsageError(f"--status-listen {description}: {e}") from None
    given = dict(zip(("address", "mode", "backlog", "lockfile"), args[1:]))
    given.update(kwargs)
    address = given.get("address")
    if not address:
        return description  # Twisted's parser says what is missing
    if not os.path.isabs(address):
        given["address"] = str(state_directory() / address)
    given.setdefault("lockfile", "0")
    return "unix:" + ":".join(f"{name}={quoteStringArgument(value)}" for name, value in given.items())


def certificate_cn(connect: str) -> str | None:
    """
    The CN of the client certificate a C{tls:} endpoint with C{certificate=}
    shows, which a collector with C{--client-ca} requires as the device;
    C{None} for any other endpoint, or a certificate without a CN.

    @raise usage.UsageError: the certificate cannot be read.
    """
    from rpisensor.net.tls import endpoint_type, parse_description

    if endpoint_type(connect) != "tls":
        return None
    try:
        certificate = parse_description(connect)[1].get("certificate")
    except ValueError:
        return None
    if not certificate:
        return None
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        with open(certificate, "rb") as f:
            match = _CERTIFICATE.search(f.read())
        if match is None:
            raise ValueError("no PEM certificate in it")
        subject = x509.load_pem_x509_certificate(match.group(0)).subject
    except (OSError, ValueError) as e:
        raise usage.UsageError(f"--connect certificate={certificate}: cannot read it ({e})") from None
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
