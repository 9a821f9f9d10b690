"""
What a page may change: simulated inputs (press and release from the
browser, as the C{sim} command does) and, once C{serve} has them, outputs'
switches. Both are C{POST}s that a page from another site cannot make:

  - the request must carry the header C{X-Rpisensor: 1}: a cross-site form
    cannot set it, and a cross-site script that tries needs a CORS
    preflight this server never grants;
  - an C{Origin} header, when the browser sends one, must name this server.

Who may: simulated inputs only with simulated pins and from this machine
(loopback), as C{sim}, and only on a page opened by a loopback name
(C{127.0.0.1}, C{localhost}, C{[::1]}). Every request, these included, must
name this server in its C{Host} (L{rpisensor.web.hosts}): a site whose name
an attacker points here (DNS rebinding) would otherwise count as this
server's origin.
Outputs: through an L{IOutputSwitches} (C{serve}'s is
L{rpisensor.web.outputs.ControllerSwitches}), whose C{granted(request)}
says whether this client holds the control grant; the page shows switches
only when L{Controls.describe} lists them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import Attribute, Interface

from rpisensor.sensing.patterns import drive
from rpisensor.net.peers import ip_of
from rpisensor.web.hosts import host_name
from rpisensor.web.query import BadQuery, Query, error_response, json_response

#: The header a state-changing request must carry.
CSRF_HEADER = "x-rpisensor"

ACTIONS = ("press", "release", "toggle")


class IOutputSwitches(Interface):
    """
    The outputs a page may switch (the remote-control side of C{serve}).
    A provider is given to L{Controls}; nothing else on the page changes.
    """

    names = Attribute("The outputs' names, in the order the page shows them.")

    def state(name: str) -> bool | None:
        """Whether output C{name} is on now (C{None}: not known yet)."""

    def granted(request) -> bool:
        """Whether the client of C{request} holds the control grant."""

    def switch(name: str, on: bool, request) -> Deferred:
        """
        Switch output C{name} for the client of C{request}; fires with its text (as the
        C{set} command replies), or fails with L{SwitchRefused} saying why not.
        """


class SwitchRefused(ValueError):
    """
    An output cannot be switched now; the message says why.

    @ivar code: the HTTP status: 409 (another client holds the claim...) or
        429 (too many control commands from this client, C{--control-rate}).
    """

    def __init__(self, message: str, code: int = 409) -> None:
        super().__init__(message)
        self.code = code


def is_local(request) -> bool:
    """Whether the request comes from this machine: a loopback address or a Unix socket."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    if host is None:
        return True  # a unix: socket
    ip = ip_of(host)
    return ip is not None and ip.is_loopback


def cross_site(request) -> str | None:
    """Why a state-changing request may come from another site, or C{None}."""
    if request.getHeader(CSRF_HEADER) != "1":
        return "a change needs the header X-Rpisensor: 1 (this page's script sends it)"
    origin = request.getHeader("origin")
    if origin is not None and origin != "null":
        host = request.getHeader("host") or ""
        if urlsplit(origin).netloc.lower() != host.lower():
            return f"a change from another site ({origin[:80]}) is refused"
    return None


def loopback_host(request) -> bool:
    """Whether the request's C{Host} names this machine's loopback (C{127.0.0.1:8080}, C{localhost}, C{[::1]})."""
    name = host_name(request)
    if name == "localhost":
        return True
    ip = ip_of(name) if name else None
    return ip is not None and ip.is_loopback


class SimulatedInputs:
    """The simulated inputs of a reader, pressed and released as C{sim NAME ACTION} does."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.names = list(reader.inputs)

    def drive(self, name: str, action: str) -> str:
        spec = self.reader.inputs[name]
        active = drive(self.reader.backend, spec, action)
        return spec.active_text if active else spec.inactive_text


class Controls:
    """
    @param simulated: the simulated inputs, or C{None} (real pins, or a receiving role).
    @param outputs: an L{IOutputSwitches}, or C{None}.
    """

    def __init__(self, simulated: SimulatedInputs | None = None, outputs: IOutputSwitches | None = None):
        self.simulated = simulated
        self.outputs = outputs

    def describe(self, request) -> dict:
        """What the page of C{request}'s client may change."""
        simulate = self.simulated.names if self.simulated is not None and is_local(request) else []
        outputs = []
        if self.outputs is not None and self.outputs.granted(request):
            outputs = [{"name": n, "on": self.outputs.state(n)} for n in self.outputs.names]
        return {"simulate": simulate, "outputs": outputs}


class _ChangeResource(Resource):
    """A C{POST /api/KIND/NAME?action=...}, checked against cross-site requests."""

    isLeaf = True

    def __init__(self, controls: Controls) -> None:
        super().__init__()
        self.controls = controls

    def render_GET(self, request):
        request.setHeader(b"allow", b"POST")
        return error_response(request, 405, "use POST to change something")

    def render_POST(self, request):
        why = cross_site(request)
        if why is not None:
            return error_response(request, 403, why)
        if len(request.postpath) != 1 or not request.postpath[0]:
            return error_response(request, 404, "name one thing: /api/sim/NAME or /api/outputs/NAME")
        try:
            name = request.postpath[0].decode("utf-8")
            query = Query(request, allowed=("action",))
        except (UnicodeDecodeError, BadQuery) as e:
            return error_response(request, 400, str(e))
        return self.change(request, name, (query.text("action") or "").lower())


class SimulateResource(_ChangeResource):
    """C{POST /api/sim/NAME?action=press|release|toggle}."""

    def change(self, request, name: str, action: str):
        simulated = self.controls.simulated
        if simulated is None or not is_local(request):
            return error_response(
                request, 403, "pressing inputs is only for simulated pins (--gpio sim), from this machine"
            )
        if not loopback_host(request):
            return error_response(
                request, 403, "pressing inputs needs the page opened as http://127.0.0.1:PORT/ or "
                "http://localhost:PORT/ on this machine",
            )  # fmt: skip
        if name not in simulated.names:
            return error_response(request, 404, f"no input named {name[:40]!r}; inputs are: "
                                  + ", ".join(simulated.names))  # fmt: skip
        if action not in ACTIONS:
            return error_response(request, 400, f"action must be press, release or toggle, got {action[:40]!r}")
        return json_response(request, {"input": name, "text": simulated.drive(name, action)})


class OutputsResource(_ChangeResource):
    """C{POST /api/outputs/NAME?action=on|off}: only for a client holding the control grant."""

    def change(self, request, name: str, action: str):
        outputs = self.controls.outputs
        if outputs is None or not outputs.granted(request):
            return error_response(request, 403, "switching outputs needs the control grant")
        if name not in outputs.names:
            return error_response(request, 404, f"no output named {name[:40]!r}")
        if action not in ("on", "off"):
            return error_response(request, 400, f"action must be on or off, got {action[:40]!r}")

        def done(text):
            request.write(json_response(request, {"output": name, "text": text}))
            request.finish()

        def failed(failure):
            code = failure.value.code if failure.check(SwitchRefused) else 500
            request.write(error_response(request, code, failure.getErrorMessage()))
            request.finish()

        maybeDeferred(outputs.switch, name, action == "on", request).addCallbacks(done, failed)
        return NOT_DONE_YET
