"""
The reporting client role (the tutorial's DataClient3 on a Pi): sample the
inputs into an outbox and push them to a collector, which may be far away
on the Internet, each reading once (protocol v2), or as plain text to a
server that does not speak v2; keep sampling while the link is down.
"""


def __getattr__(name: str):
    """
    C{from rpisensor.roles.report import build_report_service}, loaded on first
    use: the options (which C{--help} imports) must not pull in the network stack.
    """
    if name in ("build_report_service", "ReportSettings", "OutboxSettings"):
        from rpisensor.roles.report import service

        return getattr(service, name)
    if name in ("Reporter", "StreamSettings"):
        from rpisensor.roles.report import reporter

        return getattr(reporter, name)
    if name in ("ReportFactory", "ReportProtocol"):
        from rpisensor.roles.report import connection

        return getattr(connection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
