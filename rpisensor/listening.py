"""
Listening on endpoint strings, as a service that says where it listens and,
when it cannot, stops the program with one line saying why.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer


@implementer(IStreamServerEndpoint)
class _AnnouncingEndpoint:
    """Wraps an endpoint to log the address it actually listens on (port 0 included)."""

    _log = Logger(namespace="rpisensor.listening")

    def __init__(self, endpoint: IStreamServerEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self._description = description

    def listen(self, factory):
        return self._endpoint.listen(factory).addCallback(self._announce)

    def _announce(self, port: IListeningPort) -> IListeningPort:
        host = port.getHost()
        if hasattr(host, "port"):
            address = f"port {host.port}"
        else:
            name = getattr(host, "name", None)
            address = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        self._log.info(
            "Listening on {description} ({address})",
            description=self._description,
            address=address,
        )
        return port


class ListenerService(StreamServerEndpointService):
    """
    Listen on C{description}, a server endpoint string, with C{factory}.

    Listening starts in C{privilegedStartService} (before twistd drops
    privileges), and a failure there ends the program with a one-line message
    naming the endpoint instead of a traceback.
    """

    _raiseSynchronously = True

    def __init__(self, reactor, description: str, factory) -> None:
        endpoint = _AnnouncingEndpoint(serverFromString(reactor, description), description)
        super().__init__(endpoint, factory)
        self.description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            raise SystemExit(
                f"rpisensor: cannot listen on {self.description}: {e} "
                "(is another server using it? choose another with --listen)"
            ) from None
