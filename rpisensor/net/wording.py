"""
How the client side words its log lines: under short, stable namespaces
(C{rpisensor.client}, C{rpisensor.poll}) rather than the classes that
happen to log them, and with the reason a connection ended in plain words:
Twisted's own texts ("Connection was closed cleanly.", "lost in a non-clean
fashion") speak of its internals, and end with a period that the caller's
sentence then doubles.
"""

from __future__ import annotations

from twisted.internet import error
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure


class NamedLogger(Logger):
    """
    A L{Logger} to use as a class attribute that keeps the namespace it was
    given: a plain C{Logger} there renames itself after the class
    (C{rpisensor.net.reconnect.ReadyEndpoint}), which is no name for a user
    reading the log.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        return Logger(self.namespace, owner if instance is None else instance, observer=self.observer)

_PLAIN = (
    (error.ConnectionDone, "the other end closed the connection"),
    (error.ConnectionAborted, "closed by this program"),
    (error.ConnectionLost, "the connection broke (reset by the other end, or no answer from it)"),
    (error.ConnectionRefusedError, "connection refused"),
    ((error.TimeoutError, TimeoutError), "no answer in time"),
    (error.DNSLookupError, "cannot resolve the host name"),
    (error.NoRouteError, "no route to the host"),
    (CancelledError, "cancelled"),
)


def plain_reason(reason: Failure | BaseException) -> str:
    """
    A short phrase, without a final period, saying why a connection ended
    or could not be made.
    """
    failure = reason if isinstance(reason, Failure) else Failure(reason)
    for kinds, text in _PLAIN:
        if failure.check(*kinds if isinstance(kinds, tuple) else (kinds,)):
            return text
    return failure.getErrorMessage().strip().rstrip(".")
