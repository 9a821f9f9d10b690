"""
The options of the web page: C{--web ENDPOINT} on C{serve}, C{collect} and
C{poll --subscribe}.
"""

from __future__ import annotations

import re

from twisted.python import usage

from rpisensor.roles._options.base import FoldedOptions, check_endpoint, count, non_negative_float

#: tcp:, tcp6: and ssl: listen on every address unless told: the page listens on loopback instead.
_INTERFACED = ("tcp", "ssl")
#: An endpoint string's separator (a colon not escaped by a backslash).
_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def web_endpoint(description: str) -> str:
    """
    C{8080} as C{tcp:8080:interface=127.0.0.1}, and a C{tcp:} or C{ssl:}
    endpoint without C{interface=} on loopback too: the page is for this
    machine unless C{interface=} says otherwise (C{interface=0.0.0.0}: the LAN).
    """
    from rpisensor.net.tls import endpoint_type, with_lower_case_type

    text = description.strip()
    if text.isdigit():
        text = f"tcp:{text}"
    text = with_lower_case_type(text)
    kind = endpoint_type(text)
    arguments = _UNESCAPED_COLON.split(text)[1:]
    named = {part.split("=", 1)[0] for part in arguments if "=" in part}
    if kind in _INTERFACED and "interface" not in named:
        text += ":interface=127.0.0.1"
    elif kind == "tcp6" and "interface" not in named:
        text += r":interface=\:\:1"
    return text


def loopback_v6_twin(description: str) -> str | None:
    """
    For C{--web 8080} (or C{tcp:8080} without C{interface=}), which means
    this machine only: the same port on IPv6's loopback, C{::1}, so that a
    browser that reaches C{localhost} over IPv6 finds the page too. C{None}
    for any other endpoint, for port 0 (each listener would get another
    port), and where this machine has no IPv6 loopback.
    """
    import socket

    text = description.strip()
    parts = [text] if text.isdigit() else _UNESCAPED_COLON.split(text)[1:]
    if not text.isdigit() and _UNESCAPED_COLON.split(text)[0].lower() != "tcp":
        return None
    if not parts or not parts[0].isdigit() or int(parts[0]) == 0:
        return None
    if any(part.split("=", 1)[0] == "interface" for part in parts[1:] if "=" in part):
        return None
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return None
    return web_endpoint("tcp6:" + ":".join(parts))


class WebOptions(FoldedOptions):
    """The web page's options."""

    optParameters = [
        ["web-max-clients", None, "100",
         "Web pages following the live readings at once; more get 503 and retry. "
         "Example: --web-max-clients 300"],
        ["web-max-clients-per-host", None, "10",
         "Web pages following the live readings at once from one address (loopback too); more "
         "get 429 and retry. Example: --web-max-clients-per-host 30"],
        ["web-max-lag", None, "30",
         "Seconds a web page may leave what is sent to it unread (its socket's buffer full) "
         "before it is dropped; it reconnects and resumes without loss. Example: --web-max-lag 60"],
        ["web-max-buffer", None, str(256 * 1024),
         "Bytes held for one web page that does not read what is sent (beyond its socket's "
         "buffer) before it is dropped; it reconnects and resumes without loss. "
         "Example: --web-max-buffer 1048576"],
        ["web-heartbeat", None, "15",
         "Seconds between keep-alive comments on a quiet event stream, for proxies that close "
         "silent connections. Example: --web-heartbeat 30"],
        ["web-max-tiles", None, "1000",
         "Sensors the page shows at most, the most recently updated (on collect, reporters "
         "name their devices and sensors). Example: --web-max-tiles 200"],
        ["web-stale", None, "60",
         "Seconds after which a measurement's tile shows its reading as old. Example: --web-stale 300"],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self["web"] = []
        self["web-host"] = []

    def opt_web_host(self, name: str) -> None:
        """
        A name the page answers to (repeatable), besides this machine's addresses, localhost
        and its own host name: a DNS name of yours, or a proxy's. Requests naming another
        host get 403 (a page of another site whose name leads here: DNS rebinding).
        Example: --web-host sensors.example.org
        """
        name = name.strip().lower().rstrip(".")
        if not name or any(c in name for c in " /:@[]"):
            raise usage.UsageError(f"--web-host takes a host name without a port, got {name!r}")
        self["web-host"].append(name)

    def opt_web(self, description: str) -> None:
        """
        Serve the web page, its JSON API and /metrics there (repeatable), as a Twisted server
        endpoint; a bare port or tcp: without interface= listens on loopback only (127.0.0.1
        and ::1). Examples: --web 8080  --web tcp:8080:interface=0.0.0.0
        --web ssl:8443:privateKey=key.pem:certKey=cert.pem
        """
        self["web"].append(web_endpoint(description))
        twin = loopback_v6_twin(description)
        if twin is not None:
            self["web"].append(twin)

    def postOptions(self) -> None:
        super().postOptions()
        for description in self["web"]:
            check_endpoint("web", description, "serverFromString")
        self["web-max-clients"] = count("web-max-clients", self["web-max-clients"], 1)
        self["web-max-clients-per-host"] = count("web-max-clients-per-host", self["web-max-clients-per-host"], 1)
        self["web-max-buffer"] = count("web-max-buffer", self["web-max-buffer"], 1024)
        self["web-max-lag"] = non_negative_float("web-max-lag", self["web-max-lag"])
        if self["web-max-lag"] <= 0:
            raise usage.UsageError("--web-max-lag must be more than 0 seconds")
        self["web-heartbeat"] = non_negative_float("web-heartbeat", self["web-heartbeat"])
        if self["web-heartbeat"] <= 0:
            raise usage.UsageError("--web-heartbeat must be more than 0 seconds")
        self["web-stale"] = non_negative_float("web-stale", self["web-stale"])
        self["web-max-tiles"] = count("web-max-tiles", self["web-max-tiles"], 1)
        if self.get("client-ca") is not None:
            from rpisensor.net.tls import endpoint_type

            plain = [d for d in self["web"] if endpoint_type(d) not in ("ssl", "unix")]
            if plain:
                raise usage.UsageError(
                    f"--client-ca needs every --web to be ssl: or unix: too, but {plain[0]} is not: "
                    "it would show the readings to clients without a certificate"
                )

    def web_settings(self):
        """Where and how to serve the page, as the options say."""
        from rpisensor.web.events import EventLimits
        from rpisensor.web.service import WebSettings

        limits = EventLimits(
            max_clients=self["web-max-clients"],
            max_clients_per_host=self["web-max-clients-per-host"],
            max_buffered=self["web-max-buffer"],
            max_lag=self["web-max-lag"],
            heartbeat=self["web-heartbeat"],
        )
        return WebSettings(tuple(self["web"]), limits, self["web-stale"], self["web-max-tiles"], tuple(self["web-host"]))
