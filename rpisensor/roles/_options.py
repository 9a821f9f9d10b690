"""
Building blocks of the roles' command lines: the options every role that
reads pins, listens or connects shares, each checked when parsed so that a
mistake is a usage error naming the option.

Nothing here imports the reactor or the network stack, so C{--help} stays fast.
"""


from __future__ import annotations

from twisted.python import usage

from rpisensor.net.access import AccessPolicy
from rpisensor.net.limits import ListenSettings, ServerLimits
from rpisensor.hw import BACKEND_NAMES
from rpisensor.sensing.inputs import DEFAULT_INPUT, InputSpec, parse_input


def _non_negative_float(option: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{option} must be a number of seconds, got {value!r}") from None
    if number < 0:
        raise usage.UsageError(f"--{option} must not be negative, got {value!r}")
    return number


def _count(option: str, value, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{option} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise usage.UsageError(f"--{option} must be at least {minimum}, got {value!r}")
    return number


class _Options(usage.Options):
    """Options whose help text is folded to single spaces, docstrings included."""

    def __init__(self) -> None:
        super().__init__()
        for name, doc in self.docs.items():
            self.docs[name] = " ".join(doc.split())


class GPIOOptions(_Options):
    """Options of every role that reads pins: serve and report."""

    optParameters = [
        ["gpio", None, "auto",
         "GPIO backend: auto (real pins on a Pi, simulated elsewhere), rpi or sim. "
         "Example: --gpio sim"],
        ["numbering", None, "board",
         "Pin numbering of --input: board (header pins, as the tutorial) or bcm. "
         "Example: --numbering bcm"],
        ["sim-latency", None, "0",
         "Simulated pins only: seconds each read takes, to play a slow sensor. "
         "Example: --sim-latency 0.05"],
        ["sim-fail-every", None, "0",
         "Simulated pins only: every Nth read fails (0: never). Example: --sim-fail-every 10"],
        ["read-threads", None, "1",
         "Worker threads for blocking reads; 1 serialises GPIO access. Example: --read-threads 2"],
        ["max-age", None, "0",
         "Seconds a reading may be reused for later requests (0: every request waits "
         "for a fresh read). Example: --max-age 0.5"],
        ["read-timeout", None, "10",
         "Seconds a read may take before its requests get an error; the input then counts "
         "as hung until the read returns. Example: --read-timeout 2"],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self._input_texts: list[str] = []
        self["inputs"] = [DEFAULT_INPUT]

    def opt_input(self, value: str) -> None:
        """
        A named input NAME=PIN[,pull=up|down|off][,active=low|high][,on=TEXT][,off=TEXT]
        (repeatable; the first answers 'go'). Default: button=24,pull=up,active=low,
        with the tutorial's texts. Example: --input door=18,pull=up,active=high
        """
        self._input_texts.append(value)

    def postOptions(self) -> None:
        super().postOptions()
        if self["gpio"] not in BACKEND_NAMES:
            raise usage.UsageError(
                f"--gpio must be one of {', '.join(BACKEND_NAMES)}, got {self['gpio']!r}"
            )
        if self["numbering"] not in ("board", "bcm"):
            raise usage.UsageError(f"--numbering must be board or bcm, got {self['numbering']!r}")
        self["sim-latency"] = _non_negative_float("sim-latency", self["sim-latency"])
        self["sim-fail-every"] = _count("sim-fail-every", self["sim-fail-every"])
        self["read-threads"] = _count("read-threads", self["read-threads"], minimum=1)
        self["max-age"] = _non_negative_float("max-age", self["max-age"])
        self["read-timeout"] = _non_negative_float("read-timeout", self["read-timeout"])
        if self["read-timeout"] <= 0:
            raise usage.UsageError("--read-timeout must be more than 0 seconds")
        if self._input_texts:
            self["inputs"] = [self._parse_input(text) for text in self._input_texts]
        names = [spec.name for spec in self["inputs"]]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise usage.UsageError(f"--input: name {duplicates[0]!r} is given more than once")

    def _parse_input(self, text: str) -> InputSpec:
        try:
            return parse_input(text, self["numbering"])
        except ValueError as e:
            raise usage.UsageError(f"--input {text}: {e}") from None


class ListenOptions(_Options):
    """Options of the server roles: serve and collect."""

    optParameters = [
        ["max-message-bytes", None, str(ServerLimits.max_message_bytes),
         "Longest message accepted, in bytes; a longer one closes that connection. "
         "Example: --max-message-bytes 1024"],
        ["max-connections", None, str(ServerLimits.max_connections),
         "Connections open at once; more are refused and logged. Example: --max-connections 50"],
        ["max-pending", None, str(ServerLimits.max_pending),
         "Work one connection may have waiting (serve: commands waiting for replies; "
         "collect: messages waiting for the disk); beyond that the server stops reading "
         "from it until the work is done. Example: --max-pending 10"],
        ["idle-timeout", None, f"{ServerLimits.idle_timeout:g}",
         "Seconds a connection may send nothing before it is closed (0: never). "
         "Example: --idle-timeout 60"],
        ["client-ca", None, None,
         "PEM file of a certificate authority: ssl: listeners then refuse, during the TLS "
         "handshake, every client without a certificate it signed (mutual TLS). Every "
         "--listen must then be ssl: or unix:. Example: --client-ca ca.pem"],
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
        self["listen"].append(description)

    def postOptions(self) -> None:
        super().postOptions()
        self["max-message-bytes"] = _count("max-message-bytes", self["max-message-bytes"], 1)
        self["max-connections"] = _count("max-connections", self["max-connections"], 1)
        self["max-pending"] = _count("max-pending", self["max-pending"], 1)
        self["idle-timeout"] = _non_negative_float("idle-timeout", self["idle-timeout"])
        if not self["listen"]:
            self["listen"] = ["tcp:22000"]
        for description in self["listen"]:
            _check_endpoint("listen", description, "serverFromString")
        if self["client-ca"] is not None:
            self["client-ca"] = _read_ca(self["client-ca"])
            plain = [d for d in self["listen"] if not d.startswith(("ssl:", "unix:"))]
            if plain:
                raise usage.UsageError(
                    f"--client-ca needs every --listen to be ssl: or unix:, but {plain[0]} is "
                    "not: it would accept clients without a certificate"
                )

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
            idle_timeout=self["idle-timeout"],
            max_pending=self["max-pending"],
        )
        return ListenSettings(tuple(self["listen"]), limits, policy, self["client-ca"])


def _read_ca(path: str) -> bytes:
    """The PEM of a CA certificate file, checked now so a mistake is a usage error."""
    from twisted.internet.ssl import Certificate

    try:
        with open(path, "rb") as f:
            pem = f.read()
        Certificate.loadPEM(pem)
    except Exception as e:
        raise usage.UsageError(f"--client-ca {path}: not a readable PEM certificate ({e})") from None
    return pem


class ConnectOptions(_Options):
    """Options of the client roles: poll and report."""

    optParameters = [
        ["connect", None, None,
         "The server, as a Twisted client endpoint (required). "
         "Examples: --connect tcp:host=192.168.0.17:port=22000  "
         "--connect tls:host=myhome.example.org:port=22443  --connect unix:path=/run/rpisensor.sock"],
        ["max-delay", None, "60",
         "Longest wait, in seconds, between reconnection attempts; waits grow from 1 s "
         "to this. Example: --max-delay 30"],
        ["interval", None, "2", "Seconds between messages, as the tutorial's 2 s. Example: --interval 1"],
    ]  # fmt: skip

    def postOptions(self) -> None:
        super().postOptions()
        if not self["connect"]:
            raise usage.UsageError("--connect is required, e.g. --connect tcp:host=192.168.0.17:port=22000")
        _check_endpoint("connect", self["connect"], "clientFromString")
        self["max-delay"] = _non_negative_float("max-delay", self["max-delay"])
        if self["max-delay"] < 1:
            raise usage.UsageError(f"--max-delay must be at least 1 second, got {self['max-delay']}")
        self["interval"] = _non_negative_float("interval", self["interval"])
        if self["interval"] <= 0:
            raise usage.UsageError("--interval must be more than 0 seconds")


def _check_endpoint(option: str, description: str, parser: str) -> None:
    """
    Build the endpoint once, so that a typo is a usage error naming the option.
    Imported here, not at the top: endpoints load TLS, which C{--help} never needs.
    """
    from twisted.internet import endpoints, reactor

    parse = getattr(endpoints, parser)
    try:
        parse(reactor, description)
    except Exception as e:
        raise usage.UsageError(f"--{option} {description}: {e}") from None
