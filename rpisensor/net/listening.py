"""
Listening on endpoint strings, as a service that says where it listens and,
when it cannot, stops the program with one line saying why, in the
foreground and as a daemon.
"""

from __future__ import annotations

import errno

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rpisensor.net.tls import endpoint_type, mutual_tls_endpoint, with_lower_case_type

# A module-level logger: a class attribute would name the wrapper class in every line.
_log = Logger(namespace="rpisensor.net.listening")


class CannotListen(SystemExit, Exception):
    """
    A listener could not start: the program must end, with one line saying why.

    Both an L{Exception} and a L{SystemExit}, because each half reaches a
    different reader. twistd reports only an L{Exception} from starting the
    application to its daemonizing parent, through its status pipe, as
    C{module.Class: str(error)} cut at 100 bytes (hence the short C{str}
    and module name), then removes the pid file; without that the parent
    waits forever. The interpreter prints a L{SystemExit}'s C{code}, the
    whole line, instead of a traceback: on the terminal with C{-n}, into
    twistd.log as a daemon.
    """

    __module__ = "rpisensor"

    def __init__(self, summary: str, line: str) -> None:
        super().__init__(summary)
        self.code = line


def _why(error: BaseException) -> str:
    """The reason a listen failed, without Twisted's wrapping ("Couldn't listen on any:22000: ...")."""
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
        reason = error.socketError.strerror or str(error.socketError)
        return reason[:1].lower() + reason[1:]
    return str(error) or type(error).__name__


def _where(error: BaseException, description: str) -> str:
    """Where a listen failed, in few words: C{127.0.0.1 port 22000}, else the description."""
    if isinstance(error, CannotListenError) and isinstance(error.port, int):
        return f"{error.interface} port {error.port}" if error.interface else f"port {error.port}"
    return description


def _advice(error: BaseException, option: str) -> str:
    """What to do about a failed listen on an endpoint given with C{option} (C{--listen}, C{--web})."""
    code = getattr(getattr(error, "socketError", None), "errno", None)
    if code == errno.EADDRINUSE:
        return f"is another server using it? choose another with {option}"
    if code == errno.EACCES:
        return "ports below 1024 need root: start as root with --uid, or choose a higher port"
    if code == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's: check interface="
    return f"check {option}"


@implementer(IStreamServerEndpoint)
class _AnnouncingEndpoint:
    """Wraps an endpoint to log the address it actually listens on (port 0 included)."""

    def __init__(self, endpoint: IStreamServerEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self._description = description
        self.port: IListeningPort | None = None
        self._failure: Failure | None = None
        self._waiting: list[Deferred] = []

    def listen(self, factory):
        return self._endpoint.listen(factory).addCallbacks(self._announce, self._failed)

    def when_listening(self) -> Deferred:
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def _announce(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        waiting, self._waiting = self._waiting, []
        host = port.getHost()
        if hasattr(host, "port"):
            address = f"port {host.port}"
        else:
            name = getattr(host, "name", None)
            address = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        _log.info("Listening on {description} ({address})", description=self._description, address=address)
        for d in waiting:
            d.callback(port)
        return port

    def _failed(self, failure: Failure) -> Failure:
        self._failure = failure
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)
        return failure


class ListenerService(StreamServerEndpointService):
    """
    Listen on C{description}, a server endpoint string, with C{factory}.

    With C{client_ca} (the PEM of one or more CA certificates), an C{ssl:}
    listener requires client certificates signed by one of them (see
    L{rpisensor.net.tls}); a C{unix:} one is left as it is (local clients);
    any other is refused, as it would let clients in without a certificate.
    Endpoint types are taken in any case (C{SSL:}, C{UNIX:}).

    Listening starts in C{privilegedStartService} (before twistd drops
    privileges); a failure there ends the program with L{CannotListen},
    whose advice names C{option}, the option that gave the endpoint.
    A failure that comes later (an endpoint that listens asynchronously) is
    logged, and fails L{when_listening}.

    @raise ValueError: C{description} cannot be used with C{client_ca}.
    """

    def __init__(
        self, reactor, description: str, factory, client_ca: bytes | None = None, option: str = "--listen"
    ) -> None:
        self.option = option
        description = with_lower_case_type(description)
        kind = endpoint_type(description)
        if client_ca is not None and kind == "ssl":
            endpoint = mutual_tls_endpoint(reactor, description, client_ca)
        elif client_ca is not None and kind != "unix":
            raise ValueError(
                f"{description}: with client certificates required, every listener must be "
                "ssl: or unix:; this one would let clients in without a certificate"
            )
        else:
            endpoint = serverFromString(reactor, description)
        self._announcing = _AnnouncingEndpoint(endpoint, description)
        super().__init__(self._announcing, factory)
        self.description = description

    def when_listening(self) -> Deferred:
        """
        Fires with the listening port once the service listens, or fails with
        the reason it cannot (for tests and embedding).
        """
        return self._announcing.when_listening()

    def privilegedStartService(self) -> None:
        """
        Listen now. Twisted's own version logs a later failure as a traceback
        and keeps it from other errbacks, so the failure is handled here.
        """
        Service.privilegedStartService(self)
        failed_now: list[Failure] = []
        self._starting = True
        try:
            self._waitingForPort = self.endpoint.listen(self.factory)
            self._waitingForPort.addErrback(self._listen_failed, failed_now)
        finally:
            self._starting = False
        if failed_now:
            error = failed_now[0].value
            why = _why(error)
            raise CannotListen(
                f"cannot listen on {_where(error, self.description)}: {why}",
                f"rpisensor: cannot listen on {self.description}: {why} ({_advice(error, self.option)})",
            )

    def _listen_failed(self, failure: Failure, failed_now: list[Failure]) -> None:
        if failure.check(CancelledError):
            return  # stopped before it listened
        if self._starting:
            failed_now.append(failure)  # raised by privilegedStartService
            return
        _log.critical(
            "Cannot listen on {description}: {why}. Nothing listens there.",
            description=self.description,
            why=_why(failure.value),
        )
