"""
The twistd plugin's entry points: C{Options} and C{makeService}.

C{makeService} turns parsed options into collaborators (backend, reader,
limits, policy) and hands them to each role's C{build_*_service}.
"""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.python import usage

from rpisensor.gpio import GPIOError, open_backend
from rpisensor.options import GPIOOptions, ListenOptions, Options

__all__ = ["Options", "makeService"]


def open_inputs(options: GPIOOptions, reactor):
    """
    Open the backend the options name and a reader for their inputs. Stops
    the program with one line saying why if the backend cannot work here.
    """
    from rpisensor.reader import open_reader

    try:
        backend = open_backend(
            options["gpio"],
            options["numbering"],
            latency=options["sim-latency"],
            fail_every=options["sim-fail-every"],
        )
        return open_reader(
            reactor, backend, options["inputs"], options["read-threads"], options["max-age"],
            options["read-timeout"],
        )  # fmt: skip
    except GPIOError as e:
        raise SystemExit(
            f"rpisensor: cannot use GPIO: {e}. (To run without real pins: --gpio sim.)"
        ) from None


def makeService(options: Options) -> IService:
    """The service of the chosen role, which exits 0 on SIGTERM/SIGINT under twistd."""
    from twisted.internet import reactor

    from rpisensor.signals import ExitCleanlyOnSignals

    role_service = _role_service(options, reactor)
    top = MultiService()
    ExitCleanlyOnSignals(reactor).setServiceParent(top)
    role_service.setServiceParent(top)
    top.role = role_service
    return top


def _role_service(options: Options, reactor) -> IService:
    role = options.subOptions
    if isinstance(role, ListenOptions):
        from rpisensor.guard import ensure_file_limit

        ensure_file_limit(role["max-connections"])
    if options.subCommand == "serve":
        from rpisensor.server import build_server_service

        reader, reader_service = open_inputs(role, reactor)
        return build_server_service(
            reactor, reader, reader_service, role["listen"], role.limits(), role.policy(),
            role["client-ca"],
        )  # fmt: skip
    if options.subCommand == "poll":
        from rpisensor.poll import build_poll_service

        return build_poll_service(
            reactor, role["connect"], role["command"], role["interval"], role["timeout"],
            role["max-delay"],
        )  # fmt: skip
    if options.subCommand == "report":
        from rpisensor.report import build_report_service

        reader, reader_service = open_inputs(role, reactor)
        return build_report_service(
            reactor, reader, reader_service, role["connect"], role["interval"],
            role["on-change"], role["heartbeat"], role["max-delay"],
        )  # fmt: skip
    if options.subCommand == "collect":
        from rpisensor.collect import build_collect_service

        return build_collect_service(
            reactor, role["listen"], role["store"], role.limits(), role.policy(), role["client-ca"]
        )
    raise usage.UsageError(f"unknown sub-command {options.subCommand!r}")  # pragma: no cover
