"""
The C{rpisensor} command: C{rpisensor query ENDPOINT MESSAGE...} sends each
message and prints each reply on its own line. It exits 0 when every reply
came and none is an C{error: ...} reply; 1 when one is, or when the query
failed (one line on stderr says why: refused, timed out, TLS); 2 for a usage
error.
"""

from __future__ import annotations

import signal
import sys

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.python import usage
from twisted.python.failure import Failure
from OpenSSL import SSL
from service_identity import VerificationError

from rpisensor import wire
from rpisensor.net.reconnect import HandshakeFailed, ReadyEndpoint
from rpisensor.net.request import ReplyTooLong, RequestProtocol
from rpisensor.roles._options.base import OptionsAnywhere, check_client_endpoint, positive_seconds


class QueryOptions(OptionsAnywhere):
    synopsis = "[options] ENDPOINT MESSAGE [MESSAGE ...]"
    longdesc = (
        "Connect to a sensor server, send each MESSAGE, print each reply on its own line. "
        "ENDPOINT is a Twisted client endpoint or HOST:PORT. Options may come before or "
        "after the messages; after '--' everything is a message, even '-t'. "
        "Example: rpisensor query raspberrypi.local:22000 go 'read door' -t 5"
    )
    optParameters = [
        ["timeout", "t", "10", "Seconds to wait for the connection, and then for each reply."],
    ]

    def parseArgs(self, endpoint: str, *messages: str) -> None:
        if not messages:
            raise usage.UsageError("give at least one MESSAGE to send, e.g. go")
        for message in messages:
            if "\0" in message:
                raise usage.UsageError("a MESSAGE cannot contain a NUL character")
            if not wire.parse_command(message)[0]:
                raise usage.UsageError(
                    f"a MESSAGE cannot be blank ({message!r}): the server does not answer blank messages"
                )
        self["endpoint"] = check_client_endpoint("endpoint", endpoint, label="endpoint")
        self["messages"] = list(messages)

    def postOptions(self) -> None:
        self["timeout"] = positive_seconds("timeout", self["timeout"])


class ServerEnded(Exception):
    """
    The server closed the connection right after an C{error: ...} message
    (how a server refuses a client: not allowed, or busy), before every
    reply came.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _explain(failure, endpoint: str, timeout: float) -> str:
    """One line a user can act on, for the ways a query fails."""
    if failure.check(ServerEnded):
        return f"{endpoint}: {failure.value.message} (the server closed the connection)"
    if failure.check(error.ConnectionRefusedError):
        return f"{endpoint}: connection refused; is the server running, on that port?"
    if failure.check(TimeoutError, error.TimeoutError):
        return f"{endpoint}: no answer within {timeout:g} s; check the address, or raise --timeout"
    if failure.check(error.DNSLookupError):
        return f"{endpoint}: cannot resolve the host name"
    if failure.check(ReplyTooLong):
        return f"{endpoint}: {failure.getErrorMessage()}; the connection was closed"
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


async def query(
    reactor, endpoint: str, messages: list[str], timeout: float, replies: list[str] | None = None
) -> list[str]:
    """
    Send C{messages} over one connection and return the replies, in order.

    @param replies: where the replies go as they come, so that the caller
        still has those that came when the query fails.
    @raise ServerEnded: the server closed the connection after an
        C{error: ...} message, before the last reply (that message is not
        among the replies).
    """
    replies = [] if replies is None else replies
    connecting = connectProtocol(ReadyEndpoint(clientFromString(reactor, endpoint), endpoint), RequestProtocol())
    client = await connecting.addTimeout(timeout, reactor)
    pending = [client.request(message) for message in messages]
    try:
        for reply in pending:
            replies.append(await reply.addTimeout(timeout, reactor))
        return replies
    except (error.ConnectionDone, error.ConnectionLost):
        if client.parting_error is not None and replies and replies[-1] == client.parting_error:
            raise ServerEnded(replies.pop()) from None
        raise
    finally:
        for reply in pending:  # those not awaited fail when the connection closes
            reply.addErrback(lambda _: None)
        client.transport.loseConnection()


#: The exit status after Ctrl-C, as shells report a program ended by SIGINT.
INTERRUPTED = 130


async def run_query(reactor, options: QueryOptions) -> None:
    """
    C{rpisensor query}: print the replies; exit 1 on a failure (after the
    replies that came) or an C{error:} reply, 130 on Ctrl-C.
    """
    replies: list[str] = []
    asking = Deferred.fromCoroutine(query(reactor, options["endpoint"], options["messages"], options["timeout"],
                                          replies))  # fmt: skip
    previous = signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(asking.cancel))
    try:
        await asking
    except CancelledError:
        for reply in replies:
            print(reply)
        print(f"rpisensor query: interrupted, {len(replies)} of {len(options['messages'])} replies came",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(INTERRUPTED) from None
    except Exception:
        failure = Failure()
        for reply in replies:
            print(reply)
        print(f"rpisensor query: {_explain(failure, options['endpoint'], options['timeout'])}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(1)
    finally:
        signal.signal(signal.SIGINT, previous)
    for reply in replies:
        print(reply)
    if any(reply.startswith("error:") for reply in replies):
        raise SystemExit(1)
