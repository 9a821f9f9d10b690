"""
What every role's options share: number checks with messages naming the
option, endpoint checks that need no reactor, help text folded to one line.
"""

from __future__ import annotations

from twisted.python import usage


def non_negative_float(option: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{option} must be a number of seconds, got {value!r}") from None
    if number < 0:
        raise usage.UsageError(f"--{option} must not be negative, got {value!r}")
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


def check_endpoint(option: str, description: str, parser: str) -> None:
    """
    Build the endpoint once, so that a typo is a usage error naming the option.

    It is built on a stand-in reactor, so that parsing options never installs
    the global one (an embedder may install another reactor afterwards).
    Imported here, not at the top: endpoints load TLS, which C{--help} never needs.
    """
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactorClock

    parse = getattr(endpoints, parser)
    try:
        parse(MemoryReactorClock(), description)
    except Exception as e:
        raise usage.UsageError(f"--{option} {description}: {e}") from None
