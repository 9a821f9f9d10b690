"""
C{serve}'s outputs (C{--output}) as the page's switches: an
L{rpisensor.web.controls.IOutputSwitches} over the role's
L{rpisensor.control.controller.OutputController} and its grants, so a page
drives outputs under the same rules as the C{set} command: only a client
the grants admit (C{--control-allow}, C{--control-cert}), within the same
rate limit (C{--control-rate}) and logged in the same control log, never
while another client holds the claim, a deadman going safe after its C{ttl}.
"""

from __future__ import annotations

from twisted.internet.defer import fail, maybeDeferred
from zope.interface import implementer

from rpisensor.control.controller import ControlError
from rpisensor.control.gate import ControlGate
from rpisensor.net.peers import peer_text
from rpisensor.web.controls import IOutputSwitches, SwitchRefused


class _WebDriver:
    """Who drives an output from a page: named in the replies and the control log."""

    def __init__(self, request) -> None:
        transport = getattr(request, "transport", None)
        self.who = f"a web page from {peer_text(transport)}" if transport is not None else "a web page"
        address = request.getClientAddress()
        self.sender = getattr(address, "host", None) or "a local web client"


@implementer(IOutputSwitches)
class ControllerSwitches:
    """
    @param gate: the rate limit and the log of every control command
        (L{rpisensor.control.gate.ControlGate}), as for C{set} over TCP; a
        page's rate is counted by the browser's address.
    """

    def __init__(self, controller, grants, gate: ControlGate) -> None:
        self._controller = controller
        self._grants = grants
        self._gate = gate

    @property
    def names(self) -> list[str]:
        return list(self._controller.names)

    def state(self, name: str) -> bool | None:
        return self._controller.level(name).value > 0

    def granted(self, request) -> bool:
        transport = getattr(request, "transport", None)
        return transport is not None and self._grants.grants(transport)

    def switch(self, name: str, on: bool, request):
        driver = _WebDriver(request)
        too_many = self._gate.admit(self._gate.bucket_for(driver.sender), driver, "set", [name, "on" if on else "off"])
        if too_many is not None:
            return fail(SwitchRefused(too_many, code=429))

        def refused(failure):
            failure.trap(ControlError)
            raise SwitchRefused(failure.getErrorMessage())

        return maybeDeferred(self._controller.set, driver, name, on).addErrback(refused)
