"""
Listening on endpoint strings, as a service that says where it listens and,
when it cannot, stops the program with one line saying why.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.ssl import Certificate, CertificateOptions
from twisted.logger import Logger
from zope.interface import implementer


def require_client_certificates(endpoint, ca_pem: bytes) -> None:
    """
    Make an C{ssl:} endpoint refuse, during the TLS handshake, every client
    without a certificate signed by the CA in C{ca_pem}.

    Twisted's C{ssl:} strings have no option for a CA file, so the endpoint's
    certificate options are rebuilt with the same key and chain plus the CA.

    @raise ValueError: the endpoint is not an C{ssl:} one.
    """
    current = getattr(endpoint, "_sslContextFactory", None)
    if not isinstance(current, CertificateOptions):
        raise ValueError("client certificates can only be required on ssl: listeners")
    endpoint._sslContextFactory = CertificateOptions(
        privateKey=current.privateKey,
        certificate=current.certificate,
        extraCertChain=current.extraCertChain,
        dhParameters=current.dhParameters,
        trustRoot=Certificate.loadPEM(ca_pem),
    )


@implementer(IStreamServerEndpoint)
class _AnnouncingEndpoint:
    """Wraps an endpoint to log the address it actually listens on (port 0 included)."""

    _log = Logger(namespace="rpisensor.net.listening")

    def __init__(self, endpoint: IStreamServerEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self._description = description
        self.port: IListeningPort | None = None
        self._waiting: list[Deferred] = []

    def listen(self, factory):
        return self._endpoint.listen(factory).addCallback(self._announce)

    def when_listening(self) -> Deferred:
        if self.port is not None:
            return succeed(self.port)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def _announce(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)
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

    def __init__(self, reactor, description: str, factory, client_ca: bytes | None = None) -> None:
        endpoint = serverFromString(reactor, description)
        if client_ca is not None and not description.startswith("unix:"):
            require_client_certificates(endpoint, client_ca)
        self._announcing = _AnnouncingEndpoint(endpoint, description)
        super().__init__(self._announcing, factory)
        self.description = description

    def when_listening(self) -> Deferred:
        """Fires with the listening port once the service listens (for tests and embedding)."""
        return self._announcing.when_listening()

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            raise SystemExit(
                f"rpisensor: cannot listen on {self.description}: {e} "
                "(is another server using it? choose another with --listen)"
            ) from None
