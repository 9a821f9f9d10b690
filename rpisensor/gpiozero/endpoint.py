"""
Where the pin factory connects: its settings (arguments, else the
environment) as an endpoint description, and that description as an
endpoint on the link's own reactor.

Why C{tls:} is built here rather than by C{clientFromString}: Twisted's
C{tls:} parser gives the TLS layer no clock, so it batches its writes on
the global reactor, which does not run in a gpiozero program (the link runs
a reactor of its own): the handshake would never be sent. Built from the
same arguments with Twisted's public TLS API and the link's reactor as the
clock, it checks the same things: the server's certificate against
C{trustRoots=} (else the system's CAs) and its name against C{host=}.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PORT = 22000


def setting(value, variable: str, default=None):
    """An argument, else the environment variable, else the default."""
    if value is not None:
        return value
    return os.environ.get(variable) or default


def endpoint_for(host=None, port=None, endpoint=None, trust_roots=None, certificate=None, private_key=None) -> str:
    """
    The Twisted client endpoint the factory connects to, from its arguments
    or the environment: C{RPISENSOR_ENDPOINT} whole, else C{RPISENSOR_HOST}
    (C{localhost}) and C{RPISENSOR_PORT} (22000), over TLS when any of
    C{RPISENSOR_TLS_TRUST} (a directory of CA certificates), C{RPISENSOR_TLS_CERT}
    and C{RPISENSOR_TLS_KEY} (the client's certificate and key) is given.

    @raise ValueError: a setting is wrong; the message says which.
    """
    from twisted.internet.endpoints import quoteStringArgument
    from twisted.python import usage

    from rpisensor.roles._options.base import check_client_endpoint

    endpoint = setting(endpoint, "RPISENSOR_ENDPOINT")
    if endpoint is None:
        host = setting(host, "RPISENSOR_HOST", "localhost")
        port = setting(port, "RPISENSOR_PORT", DEFAULT_PORT)
        try:
            port = int(port)
        except (TypeError, ValueError):
            pass
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"the port (RPISENSOR_PORT) must be a number from 1 to 65535, got {port!r}")
        tls = {
            "trustRoots": setting(trust_roots, "RPISENSOR_TLS_TRUST"),
            "certificate": setting(certificate, "RPISENSOR_TLS_CERT"),
            "privateKey": setting(private_key, "RPISENSOR_TLS_KEY"),
        }
        host = quoteStringArgument(str(host))
        if any(tls.values()):
            given = "".join(f":{key}={quoteStringArgument(str(value))}" for key, value in tls.items() if value)
            endpoint = f"tls:host={host}:port={port}{given}"
        else:
            endpoint = f"tcp:host={host}:port={port}"
    try:
        description = check_client_endpoint("endpoint", endpoint, label="the Pi's endpoint (RPISENSOR_ENDPOINT)")
    except usage.UsageError as e:
        raise ValueError(str(e)) from None
    if description.lower().startswith("tls:"):
        unknown = set(_arguments(description)) - {"host", "port", "timeout", "trustRoots", "certificate", "privateKey"}
        if unknown:
            raise ValueError(
                f"the Pi's endpoint {description}: {', '.join(sorted(unknown))}= is not taken by remote pins; "
                "use host=, port=, timeout=, trustRoots=, certificate= and privateKey="
            )
    return description


def _arguments(description: str) -> dict[str, str]:
    """The C{key=value} arguments of an endpoint string, unescaped (C{\\:} is a colon in a value)."""
    parts, current, escaped = [], [""], False
    for char in description:
        if escaped:
            current[-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = [""]
        elif char == "=" and len(current) == 1:
            current.append("")
        else:
            current[-1] += char
    parts.append(current)
    return {part[0]: part[1] for part in parts[1:] if len(part) == 2}


def build_endpoint(reactor, description: str):
    """The endpoint of C{description} (as L{endpoint_for} returns it) on C{reactor}."""
    from twisted.internet.endpoints import clientFromString

    if not description.lower().startswith("tls:"):
        return clientFromString(reactor, description)
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
    from twisted.internet.ssl import Certificate, KeyPair, PrivateCertificate, optionsForClientTLS, trustRootFromCertificates

    given = _arguments(description)
    host = given["host"]
    trust = None
    if "trustRoots" in given:
        certificates = [
            Certificate.loadPEM(path.read_bytes())
            for path in sorted(Path(given["trustRoots"]).iterdir())
            if path.is_file() and path.suffix == ".pem"
        ]
        if not certificates:
            raise ValueError(f"trustRoots={given['trustRoots']}: no .pem certificate in that directory")
        trust = trustRootFromCertificates(certificates)
    client = None
    if "certificate" in given:
        pem = Path(given["certificate"]).read_bytes()
        if "privateKey" in given:
            key = KeyPair.load(Path(given["privateKey"]).read_bytes(), 1)  # 1: PEM
            client = PrivateCertificate.fromCertificateAndKeyPair(Certificate.loadPEM(pem), key)
        else:
            client = PrivateCertificate.loadPEM(pem)
    options = optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)
    tcp = HostnameEndpoint(reactor, host.encode("idna"), int(given["port"]), int(given.get("timeout", 30)))
    return wrapClientTLS(options, tcp, clock=reactor)
