"""
What every role's options share: number checks with messages naming the
option, endpoint checks that need no reactor and suggest the right form,
help text folded to one line.
"""

from __future__ import annotations

import getopt
import re
import sys

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


def version_text() -> str:
    """C{rpisensor 0.1.0 (Twisted 26.10.0, Python 3.11.7)}: what every C{--version} prints."""
    import twisted

    from rpisensor import __version__

    return f"rpisensor {__version__} (Twisted {twisted.__version__}, Python {sys.version.split()[0]})"


class VersionedOptions(usage.Options):
    """Options whose C{--version} is rpisensor's (with Twisted's and Python's), not Twisted's alone."""

    def opt_version(self) -> None:
        """Show rpisensor's version (and Twisted's and Python's), then exit."""
        print(version_text())
        raise SystemExit(0)


class OptionsAnywhere(VersionedOptions):
    """
    Options that may come anywhere among the arguments (C{query EP go -t 2},
    C{watch EP --json}), as GNU tools take them: Twisted's parser stops at
    the first argument. After C{--} everything is an argument.
    """

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            found, arguments = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e)) from None
        takes_value = {f"--{name[:-1]}" for name in self.longOpt if name.endswith("=")}
        takes_value |= {f"-{letter}" for letter, colon in zip(self.shortOpt, self.shortOpt[1:] + " ")
                        if letter != ":" and colon == ":"}  # fmt: skip
        ordered: list[str] = []
        for option, value in found:
            ordered += [option, value] if option in takes_value else [option]
        super().parseOptions([*ordered, "--", *arguments])


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


#: A URL's scheme where an endpoint was wanted (C{--web http:8080}, C{--web http://0.0.0.0:8080}).
_URL = re.compile(r"(?P<scheme>https?):(?://(?P<host>[^/:]+))?:?(?P<port>\d{1,5})/?", re.IGNORECASE)


def _hint(description: str, parser: str) -> str:
    """What the user probably meant, or what the forms look like."""
    text = description.strip()
    host_port = _HOST_PORT.fullmatch(text)
    if parser == "serverFromString":
        if text.isdigit():
            return f"did you mean tcp:{text}?"
        url = _URL.fullmatch(text)
        if url is not None:
            interface = f":interface={url['host']}" if url["host"] else ""
            if url["scheme"].lower() == "https":
                return (f"this takes a Twisted endpoint, not a URL: did you mean "
                        f"ssl:{url['port']}{interface}:privateKey=key.pem:certKey=cert.pem?")  # fmt: skip
            return f"this takes a Twisted endpoint, not a URL: did you mean tcp:{url['port']}{interface}?"
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
    if parser == "serverFromString" and description.strip().lower().startswith("systemd:"):
        _check_systemd(option, description, label)
    try:
        _parse(parser, description)
    except Exception as e:
        # Some of Twisted's errors have no text of their own (a trustRoots= directory that
        # cannot be listed): say the one underneath.
        reason = str(e) or str(getattr(e, "originalException", "") or "") or type(e).__name__
        raise usage.UsageError(
            f"{label or '--' + option} {description}: {reason}; {_hint(description, parser)}"
        ) from None


def _check_systemd(option: str, description: str, label: str | None) -> None:
    """
    A C{systemd:} endpoint takes a socket that systemd handed over: say so
    when there is none, or not that one (Twisted's own error is "list
    index out of range").
    """
    import os

    name = label or f"--{option}"
    handed = 0
    if os.environ.get("LISTEN_PID", "") == str(os.getpid()):
        try:
            handed = int(os.environ.get("LISTEN_FDS", "0"))
        except ValueError:
            handed = 0
    index = re.search(r"(?i)(?:^|:)index=(\d+)", description)
    wanted = int(index.group(1)) if index else 0
    if handed == 0:
        raise usage.UsageError(
            f"{name} {description}: systemd handed this process no socket (LISTEN_FDS is not set for it): a "
            "systemd: endpoint works only when systemd starts rpisensor through a .socket unit (see "
            "'Socket activation' in docs/howto/systemd.md); outside systemd, use tcp:22000"
        )
    if wanted >= handed:
        raise usage.UsageError(
            f"{name} {description}: systemd handed over {handed} socket{'s' if handed != 1 else ''}, "
            f"numbered from 0; index={wanted} is not one of them"
        )


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
    host_port = _HOST_PORT.fullmatch(description.strip())
    if host_port is not None and not 0 < int(host_port["port"]) < 65536:
        raise usage.UsageError(
            f"{name} {description}: port {int(host_port['port'])} is out of range: a TCP port is 1 to 65535"
        )
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
