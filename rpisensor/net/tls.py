"""
Mutual TLS for server roles: C{ssl:} listeners that require a client
certificate signed by one of the CAs in C{--client-ca}, built from the same
C{ssl:} strings Twisted takes, through public API only.

Twisted's C{ssl:} strings have no parameter for client CAs, and its parsed
endpoint keeps its certificate options private. So the string is parsed
here (L{parse_description}, Twisted's documented grammar) and the endpoint
built from its parts: L{CertificateOptions} with every parameter the string
gave (C{privateKey}, C{certKey}, C{extraCertChain}, C{dhParameters},
C{sslmethod}) plus a trust root of every certificate in the CA file, and a
public L{SSL4ServerEndpoint}.
"""

from __future__ import annotations

# The TLS stack is imported where it is used: the options parse endpoint
# strings with this module, and --help must not load OpenSSL.

#: The parameters of an C{ssl:} server string, in Twisted's positional order.
SSL_PARAMETERS = (
    "port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
    "extraCertChain", "dhParameters",
)  # fmt: skip


def parse_description(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint string as Twisted does: C{:} separates parameters, the
    first C{=} of a parameter separates its name from its value, and a
    backslash makes the next character plain.

    @return: the positional parameters (the endpoint type first) and the
        named ones: C{"ssl:443:privateKey=C\\:/key.pem"} gives
        C{(["ssl", "443"], {"privateKey": "C:/key.pem"})}.
    @raise ValueError: the string ends with a lone backslash.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    parameter: list[str] = []  # the strings of the parameter being read: [value] or [name, value]
    current: list[str] = []
    separators = ":="
    characters = iter(description)
    for character in characters:
        if character in separators:
            parameter.append("".join(current))
            current = []
            if character == ":":
                _add(parameter, args, kwargs)
                parameter, separators = [], ":="
            else:
                separators = ":"  # later "=" in a value are plain
        elif character == "\\":
            try:
                current.append(next(characters))
            except StopIteration:
                raise ValueError(f"{description!r} ends with a lone backslash") from None
        else:
            current.append(character)
    parameter.append("".join(current))
    _add(parameter, args, kwargs)
    return args, kwargs


def _add(parameter: list[str], args: list[str], kwargs: dict[str, str]) -> None:
    if len(parameter) == 1:
        args.append(parameter[0])
    else:
        kwargs[parameter[0]] = parameter[1]


def endpoint_type(description: str) -> str:
    """The type of an endpoint string, lower case (C{"SSL:443"} is C{"ssl"})."""
    return description.split(":", 1)[0].lower()


def with_lower_case_type(description: str) -> str:
    """
    C{description} with its type in lower case. Twisted matches the types
    of endpoint plugins (C{tcp6:}, C{systemd:}) in any case, but its own
    C{tcp:}, C{ssl:} and C{unix:} only in lower case.
    """
    kind, colon, rest = description.partition(":")
    return kind.lower() + colon + rest


def load_certificate_authorities(pem: bytes) -> list:
    """
    Every certificate in a PEM bundle, in order, as Twisted L{Certificate}s.

    @raise ValueError: the data holds no PEM certificate, or a broken one.
    """
    from cryptography import x509
    from OpenSSL.crypto import X509
    from twisted.internet.ssl import Certificate

    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"no PEM certificate could be read ({e})") from None
    return [Certificate(X509.from_cryptography(c)) for c in certificates]


def ssl_parameters(description: str) -> dict[str, str]:
    """
    The parameters of the C{ssl:} string C{description}, by name, as
    Twisted's C{ssl:} parser takes them (positionally or by name).

    @raise ValueError: it is not an C{ssl:} string Twisted would take.
    """
    args, kwargs = parse_description(description)
    if args.pop(0).lower() != "ssl":
        raise ValueError(f"{description}: client certificates can only be required on ssl: listeners")
    if len(args) > len(SSL_PARAMETERS):
        raise ValueError(f"{description}: too many parameters for ssl:")
    given = dict(zip(SSL_PARAMETERS, args))
    for name, value in kwargs.items():
        if name not in SSL_PARAMETERS:
            raise ValueError(
                f"{description}: ssl: has no parameter {name!r}; it takes {', '.join(SSL_PARAMETERS)}"
            )
        if name in given:
            raise ValueError(f"{description}: {name} is given twice")
        given[name] = value
    if "port" not in given:
        raise ValueError(f"{description}: ssl: needs a port, e.g. ssl:22443:privateKey=key.pem")
    for name in ("port", "backlog"):
        if not given.get(name, "0").isdigit():
            raise ValueError(f"{description}: the {name} must be a number, got {given[name]!r}")
    return given


def mutual_tls_options(description: str, ca_pem: bytes):
    """
    The L{CertificateOptions} Twisted's C{ssl:} parser builds from
    C{description} (key, certificate, C{extraCertChain}, C{dhParameters},
    C{sslmethod}), plus a trust root of every certificate in C{ca_pem}.

    @raise ValueError: C{description} is wrong, or a file it names cannot
        be used; the message says which.
    """
    from OpenSSL import SSL
    from twisted.internet.ssl import (
        CertificateOptions,
        DiffieHellmanParameters,
        PrivateCertificate,
        trustRootFromCertificates,
    )
    from twisted.python.filepath import FilePath

    given = ssl_parameters(description)
    key_path = given.get("privateKey", "server.pem")
    cert_path = given.get("certKey", key_path)
    try:
        private = PrivateCertificate.loadPEM(
            FilePath(cert_path).getContent() + b"\n" + FilePath(key_path).getContent()
        )
        extra = {}
        if "sslmethod" in given:
            method = getattr(SSL, given["sslmethod"], None)
            if not isinstance(method, int) or not given["sslmethod"].endswith("_METHOD"):
                raise ValueError(f"sslmethod={given['sslmethod']} is not a method such as TLS_METHOD")
            extra["method"] = method
        if "extraCertChain" in given:
            chain = load_certificate_authorities(FilePath(given["extraCertChain"]).getContent())
            extra["extraCertChain"] = [c.original for c in chain]
        if "dhParameters" in given:
            extra["dhParameters"] = DiffieHellmanParameters.fromFile(FilePath(given["dhParameters"]))
        trust = trustRootFromCertificates(load_certificate_authorities(ca_pem))
        return CertificateOptions(
            privateKey=private.privateKey.original,
            certificate=private.original,
            trustRoot=trust,
            **extra,
        )
    except (OSError, ValueError, SSL.Error) as e:
        raise ValueError(f"{description}: {e}") from None


def mutual_tls_endpoint(reactor, description: str, ca_pem: bytes):
    """
    The C{ssl:} server endpoint C{description} (an L{SSL4ServerEndpoint}),
    requiring during the TLS handshake a client certificate signed by one
    of the CAs in C{ca_pem}.

    @raise ValueError: as L{mutual_tls_options}.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

    given = ssl_parameters(description)
    return SSL4ServerEndpoint(
        reactor,
        int(given["port"]),
        mutual_tls_options(description, ca_pem),
        backlog=int(given.get("backlog", 50)),
        interface=given.get("interface", ""),
    )


def requires_client_certificate(transport) -> bool:
    """Whether the TLS connection on C{transport} refuses clients without a certificate."""
    from OpenSSL import SSL

    try:
        mode = transport.getHandle().get_context().get_verify_mode()
    except Exception:
        return False
    return bool(mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)


def certificate_name(transport) -> str | None:
    """The subject CN of the client certificate on a TLS transport, or C{None}."""
    try:
        certificate = transport.getPeerCertificate()
    except Exception:
        return None
    if certificate is None:
        return None
    from cryptography.x509.oid import NameOID

    names = certificate.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
