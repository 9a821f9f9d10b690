"""
The C{rpisensor} command: C{rpisensor query ENDPOINT MESSAGE...} sends each
message and prints each reply on its own line. It exits 0 when every reply
came and none is an C{error: ...} reply; 1 when one is, or when the query
failed (one line on stderr says why: refused, timed out, TLS); 2 for a usage
error.
"""

from __future__ import annotations

import sys

from twisted.internet import error
from twisted.internet.defer import TimeoutError
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.python import usage
from twisted.python.failure import Failure
from OpenSSL import SSL
from service_identity import VerificationError

from rpisensor.net.reconnect import HandshakeFailed, ReadyEndpoint
from rpisensor.net.request import RequestProtocol


class QueryOptions(usage.Options):
    synopsis = "ENDPOINT MESSAGE [MESSAGE ...]"
    longdesc = (
        "Connect to a sensor server, send each MESSAGE, print each reply on its own line. "
        "Example: rpisensor query tcp:host=raspberrypi.local:port=22000 go"
    )
    optParameters = [
        ["timeout", "t", "10", "Seconds to wait for the connection, and then for each reply."],
    ]

    def parseArgs(self, endpoint: str, *messages: str) -> None:
        if not messages:
            raise usage.UsageError("give at least one MESSAGE to send, e.g. go")
        if any("\0" in m for m in messages):
            raise usage.UsageError("a MESSAGE cannot contain a NUL character")
        self["endpoint"], self["messages"] = endpoint, list(messages)

    def postOptions(self) -> None:
        try:
            self["timeout"] = float(self["timeout"])
        except ValueError:
            raise usage.UsageError(f"--timeout must be a number of seconds, got {self['timeout']!r}") from None
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be more than 0 seconds")


def _explain(failure, endpoint: str, timeout: float) -> str:
    """One line a user can act on, for the ways a query fails."""
    if failure.check(error.ConnectionRefusedError):
        return f"{endpoint}: connection refused; is the server running, on that port?"
    if failure.check(TimeoutError, error.TimeoutError):
        return f"{endpoint}: no answer within {timeout:g} s; check the address, or raise --timeout"
    if failure.check(error.DNSLookupError):
        return f"{endpoint}: cannot resolve the host name"
    if failure.check(error.ConnectionDone, error.ConnectionLost):
        return f"{endpoint}: the server closed the connection before replying"
    if failure.check(HandshakeFailed):
        reason = failure.value.reason
        if reason.check(VerificationError):
            return (
                f"{endpoint}: TLS failed: the server's certificate does not name the host= "
                f"given ({reason.getErrorMessage()})"
            )
        return (
            f"{endpoint}: TLS failed: {reason.getErrorMessage()}; check trustRoots= (the CA "
            "that signed the server's certificate) and, if the server wants one, certificate="
        )
    if failure.check(SSL.Error):  # after the handshake, e.g. TLS 1.3's late client-certificate check
        return (
            f"{endpoint}: TLS failed: {failure.getErrorMessage()}; if the server requires a "
            "client certificate, give certificate= and privateKey="
        )
    return f"{endpoint}: {failure.getErrorMessage()}"


async def query(reactor, endpoint: str, messages: list[str], timeout: float) -> list[str]:
    """Send C{messages} over one connection and return the replies, in order."""
    connecting = connectProtocol(ReadyEndpoint(clientFromString(reactor, endpoint), endpoint), RequestProtocol())
    client = await connecting.addTimeout(timeout, reactor)
    pending = [client.request(message) for message in messages]
    try:
        return [await reply.addTimeout(timeout, reactor) for reply in pending]
    finally:
        for reply in pending:  # those not awaited fail when the connection closes
            reply.addErrback(lambda _: None)
        client.transport.loseConnection()


async def run_query(reactor, options: QueryOptions) -> None:
    """C{rpisensor query}: print the replies; exit 1 on a failure or an C{error:} reply."""
    try:
        replies = await query(reactor, options["endpoint"], options["messages"], options["timeout"])
    except Exception:
        print(f"rpisensor query: {_explain(Failure(), options['endpoint'], options['timeout'])}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(1)
    for reply in replies:
        print(reply)
    if any(reply.startswith("error:") for reply in replies):
        raise SystemExit(1)
