"""
The options of the server roles: C{serve} and C{collect}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.net.access import AccessPolicy
from rpisensor.net.limits import ListenSettings, ServerLimits
from rpisensor.roles._options.base import FoldedOptions, check_endpoint, count, non_negative_float


class ListenOptions(FoldedOptions):
    """Options of the server roles: serve and collect."""

    optParameters = [
        ["max-message-bytes", None, str(ServerLimits.max_message_bytes),
         "Longest message accepted, in bytes; a longer one closes that connection. "
         "Example: --max-message-bytes 1024"],
        ["max-connections", None, str(ServerLimits.max_connections),
         "Connections open at once; more are refused and logged. Example: --max-connections 50"],
        ["max-connections-per-host", None, str(ServerLimits.max_connections_per_host),
         "Connections open at once from one IP address, so that one peer cannot take every "
         "slot; more are refused and logged. Loopback and unix: clients count only toward "
         "--max-connections. Example: --max-connections-per-host 5"],
        ["handshake-timeout", None, f"{ServerLimits.handshake_timeout:g}",
         "Seconds a client of an ssl: listener has to finish the TLS handshake (with "
         "--client-ca: to show its certificate); then it is closed, whatever --idle-timeout "
         "says. Example: --handshake-timeout 5"],
        ["max-pending", None, str(ServerLimits.max_pending),
         "Work one connection may have waiting (serve: commands waiting for replies; "
         "collect: messages waiting for the disk); beyond that the server stops reading "
         "from it until the work is done. Example: --max-pending 10"],
        ["idle-timeout", None, f"{ServerLimits.idle_timeout:g}",
         "Seconds a connection may send nothing before it is closed (0: never). "
         "Example: --idle-timeout 60"],
        ["message-timeout", None, f"{ServerLimits.message_timeout:g}",
         "Seconds a message may take to arrive whole once it began (up to its NUL; on --web, a "
         "request's headers and body); a connection that trickles one longer is closed (the "
         "web answers 408). Example: --message-timeout 20"],
        ["client-ca", None, None,
         "PEM file of one or more certificate authorities: ssl: listeners then refuse, during "
         "the TLS handshake, every client without a certificate one of them signed (mutual "
         "TLS). Every --listen must then be ssl: or unix:. Example: --client-ca ca.pem"],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow"] = []

    def opt_allow(self, network: str) -> None:
        """
        A network whose clients may connect (repeatable). Default: loopback, private and
        link-local networks only (or anyone with a valid certificate, with --client-ca).
        Examples: --allow 192.168.0.0/24  --allow 203.0.113.7  --allow 0.0.0.0/0
        """
        from rpisensor.net.access import parse_network

        try:
            self["allow"].append(parse_network(network))
        except ValueError as e:
            raise usage.UsageError(f"--allow: {e}") from None

    def opt_listen(self, description: str) -> None:
        """
        Where to listen, as a Twisted server endpoint (repeatable; default tcp:22000).
        Examples: --listen tcp:22000:interface=0.0.0.0  --listen tcp6:22000
        --listen unix:/run/rpisensor.sock  --listen systemd:domain=INET:index=0
        --listen ssl:22443:privateKey=key.pem:certKey=cert.pem
        """
        from rpisensor.net.tls import with_lower_case_type

        self["listen"].append(with_lower_case_type(description))

    def postOptions(self) -> None:
        super().postOptions()
        self["max-message-bytes"] = count("max-message-bytes", self["max-message-bytes"], 1)
        self["max-connections"] = count("max-connections", self["max-connections"], 1)
        self["max-connections-per-host"] = count(
            "max-connections-per-host", self["max-connections-per-host"], 1
        )
        self["handshake-timeout"] = non_negative_float("handshake-timeout", self["handshake-timeout"])
        if self["handshake-timeout"] <= 0:
            raise usage.UsageError("--handshake-timeout must be more than 0 seconds")
        self["max-pending"] = count("max-pending", self["max-pending"], 1)
        self["idle-timeout"] = non_negative_float("idle-timeout", self["idle-timeout"])
        self["message-timeout"] = non_negative_float("message-timeout", self["message-timeout"])
        if self["message-timeout"] <= 0:
            raise usage.UsageError("--message-timeout must be more than 0 seconds")
        if not self["listen"]:
            self["listen"] = ["tcp:22000"]
        for description in self["listen"]:
            check_endpoint("listen", description, "serverFromString")
        if self["client-ca"] is not None:
            self._check_mutual_tls()

    def _check_mutual_tls(self) -> None:
        """With --client-ca: read every CA, and build every ssl: listener as it will run."""
        from twisted.internet.testing import MemoryReactorClock

        from rpisensor.net.tls import endpoint_type, mutual_tls_endpoint

        path = self["client-ca"]
        self["client-ca"] = _read_ca(path)
        plain = [d for d in self["listen"] if endpoint_type(d) not in ("ssl", "unix")]
        if plain:
            raise usage.UsageError(
                f"--client-ca needs every --listen to be ssl: or unix:, but {plain[0]} is "
                "not: it would accept clients without a certificate"
            )
        for description in self["listen"]:
            if endpoint_type(description) == "ssl":
                try:
                    mutual_tls_endpoint(MemoryReactorClock(), description, self["client-ca"])
                except ValueError as e:
                    raise usage.UsageError(f"--listen with --client-ca {path}: {e}") from None

    def listen_settings(self) -> ListenSettings:
        """Where and how to listen, as the options say."""
        if self["allow"]:
            policy = AccessPolicy(self["allow"])
        elif self["client-ca"] is not None:
            policy = AccessPolicy([])  # the certificate is the credential
        else:
            policy = AccessPolicy()
        limits = ServerLimits(
            max_message_bytes=self["max-message-bytes"],
            max_connections=self["max-connections"],
            max_connections_per_host=self["max-connections-per-host"],
            handshake_timeout=self["handshake-timeout"],
            idle_timeout=self["idle-timeout"],
            message_timeout=self["message-timeout"],
            max_pending=self["max-pending"],
        )
        return ListenSettings(tuple(self["listen"]), limits, policy, self["client-ca"])


def _read_ca(path: str) -> bytes:
    """The PEM of a file of CA certificates, checked now so a mistake is a usage error."""
    from rpisensor.net.tls import load_certificate_authorities

    try:
        with open(path, "rb") as f:
            pem = f.read()
        load_certificate_authorities(pem)
    except (OSError, ValueError) as e:
        raise usage.UsageError(f"--client-ca {path}: not a readable PEM certificate ({e})") from None
    return pem
