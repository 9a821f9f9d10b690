"""
Stopping a role in order: listeners first, then the connections' work in
flight, then the pools and files they use.
"""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from rpisensor.net.admission import AdmittingFactory

_log = Logger(namespace="rpisensor.stopping")


class DrainService(Service):
    """
    On stop, drains C{factory}'s connections (see L{AdmittingFactory.drain}),
    then logs the summaries of the lines its peers caused that were left out.
    """

    def __init__(self, factory: AdmittingFactory, clock, timeout: float) -> None:
        self.factory = factory
        self._clock = clock
        self.timeout = timeout

    def stopService(self) -> Deferred:
        super().stopService()
        drained = self.factory.drain(self._clock, self.timeout)
        return drained.addCallback(lambda _: self.factory.flush_logs())


class StopInOrder(MultiService):
    """
    A MultiService whose children stop one after the other, last added first,
    each once the one before it has finished: listeners, then the connections'
    work in flight, then the pools and files they use.
    """

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                _log.failure("Stopping {child} failed; stopping the others anyway", child=child)
