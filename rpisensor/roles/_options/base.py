"""
What every role's options share: number checks with messages naming the
option, endpoint checks that need no reactor and suggest the right form,
help text folded to one line.
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import IReactorPluggableNameResolver
from twisted.python import usage
from zope.interface import implementer


def non_negative_float(option: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{option} must be a number of seconds, got {value!r}") from None
    if number < 0:
        raise usage.UsageError(f"--{option} must not be negative, got {value!r}")
    return number


def positive_seconds(option: str, value) -> float:
    """A duration that must be more than 0, e.g. a timeout."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{option} must be a number of seconds, got {value!r}") from None
    if not number > 0:
        raise usage.UsageError(f"--{option} must be more than 0 seconds")
    return number


def count(option: str, value, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{option} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise usage.UsageError(f"--{option} must be at least {minimum}, got {value!r}")
    return number


class FoldedOptions(usage.Options):
    """Options whose help text is folded to single spaces, docstrings included."""

    def __init__(self) -> None:
        super().__init__()
        for name, doc in self.docs.items():
            self.docs[name] = " ".join(doc.split())


#: HOST:PORT, or [IPV6]:PORT, as a user types an address.
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[A-Za-z0-9][\w.-]*)):(?P<port>\d{1,5})")


def _parse(parser: str, description: str) -> None:
    """
    Build the endpoint once on a stand-in reactor, so that parsing options
    never installs the global one (an embedder may install another reactor
    afterwards). Imported here, not at the top: endpoints load TLS, which
    C{--help} never needs.
    """
    from twisted.internet import endpoints

    getattr(endpoints, parser)(_CheckOnly(), description)


@implementer(IReactorPluggableNameResolver)
class _CheckOnly:
    """
    The reactor an endpoint is built on to check its description: an endpoint
    keeps its reactor and uses it only to listen or connect, which a check
    never does. (C{tls:}'s L{HostnameEndpoint} also asks for a name resolver:
    this declares one.) Not Twisted's
    C{MemoryReactorClock}, whose module loads trial: a megabyte of memory and
    4% of C{serve}'s start-up instructions, for nothing.
    """

    nameResolver = None

    def installNameResolver(self, resolver):
        raise NotImplementedError("options are checked without a reactor")


def _hint(description: str, parser: str) -> str:
    """What the user probably meant, or what the forms look like."""
    text = description.strip()
    host_port = _HOST_PORT.fullmatch(text)
    if parser == "serverFromString":
        if text.isdigit():
            return f"did you mean tcp:{text}?"
        if host_port is not None and host_port["host"]:
            return f"did you mean tcp:{host_port['port']}:interface={host_port['host']}?"
        return (
            "a server endpoint looks like tcp:22000, tcp:22000:interface=192.168.0.17, "
            "ssl:22443:privateKey=key.pem:certKey=cert.pem or unix:/run/rpisensor.sock"
        )
    if text.isdigit():
        return f"did you mean tcp:host=HOST:port={text} (or HOST:{text})?"
    if text and ":" not in text and "=" not in text:
        return f"did you mean tcp:host={text}:port=22000 (or {text}:22000)?"
    return (
        "a client endpoint looks like tcp:host=192.168.0.17:port=22000 (or 192.168.0.17:22000), "
        "tls:host=pi.example.org:port=22443 or unix:path=/run/rpisensor.sock"
    )


def check_endpoint(option: str, description: str, parser: str, label: str | None = None) -> None:
    """
    Build the endpoint once, so that a typo is a usage error naming the option
    and suggesting the right form.

    @param parser: C{"serverFromString"} or C{"clientFromString"}.
    @param label: how the message names the value; C{--OPTION} by default.
    """
    try:
        _parse(parser, description)
    except Exception as e:
        raise usage.UsageError(
            f"{label or '--' + option} {description}: {e}; {_hint(description, parser)}"
        ) from None


def client_endpoint(description: str) -> str:
    """
    C{HOST:PORT} or C{[IPV6]:PORT} as the client endpoint
    C{tcp:host=HOST:port=PORT}; any other text (C{tcp:...}, C{tls:...}, an
    endpoint type of a plugin) unchanged.
    """
    match = _HOST_PORT.fullmatch(description.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        return description
    try:
        _parse("clientFromString", description)
    except ValueError as e:
        if not str(e).startswith("Unknown endpoint type"):
            return description
    except Exception:
        return description  # a known type with bad arguments (tcp:22000): say so as such
    else:
        return description
    from twisted.internet.endpoints import quoteStringArgument

    host = match["v6"] or match["host"]
    return f"tcp:host={quoteStringArgument(host)}:port={int(match['port'])}"


def _endpoint_arguments(description: str) -> set[str]:
    """
    The C{key=} names in an endpoint string. Twisted parses these strings in
    private code, so this splits them itself: on colons not escaped by a
    backslash, as Twisted does.
    """
    return {part.split("=", 1)[0] for part in re.split(r"(?<!\\):", description)[1:] if "=" in part}


def check_client_endpoint(option: str, description: str, label: str | None = None) -> str:
    """
    Check a client endpoint as the client roles take it, and return it as
    Twisted parses it (see L{client_endpoint}).

    An C{ssl:} client string checks neither the server's certificate nor
    its name unless it has C{caCertsDir=} and C{hostname=} (Twisted's
    defaults for C{ssl:} verify nothing): without both it is refused,
    pointing at C{tls:}, which checks both by default.

    @raise usage.UsageError: it is not a client endpoint, or an unchecked
        C{ssl:} one.
    """
    name = label or f"--{option}"
    description = client_endpoint(description)
    if description.strip().lower().startswith("ssl:"):
        given = _endpoint_arguments(description)
        if "hostname" not in given:
            unchecked = "" if "caCertsDir" in given else " (and without caCertsDir= it checks no certificate at all)"
            raise usage.UsageError(
                f"{name} {description}: an ssl: client without hostname= does not check that the "
                f"certificate belongs to the server{unchecked}, so anyone on the way could pose as "
                "it. Use tls:host=HOST:port=PORT instead, which checks both (add :trustRoots=DIR to "
                "trust your own CA)."
            )
        if "caCertsDir" not in given:
            raise usage.UsageError(
                f"{name} {description}: name the CA to trust with caCertsDir=DIR, or use "
                "tls:host=HOST:port=PORT (it checks the certificate against the system's CAs, or "
                "the ones in trustRoots=DIR)."
            )
    check_endpoint(option, description, "clientFromString", label)
    return description
