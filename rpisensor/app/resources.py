"""
Process resources a role needs before it starts: enough open files.
"""

from __future__ import annotations

from twisted.logger import Logger

_log = Logger(namespace="rpisensor.app.resources")


def ensure_file_limit(max_connections: int, spare: int = 64) -> None:
    """
    Raise the soft open-files limit so C{max_connections} sockets fit (plus
    C{spare} for files, pipes and threads), as far as the hard limit allows.
    """
    import resource

    needed = max_connections + spare
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            _log.warn(
                "Only {target} files may be open (hard limit), fewer than --max-connections "
                "{max_connections} needs; raise the limit (LimitNOFILE= in a systemd unit, "
                "ulimit -n) or lower --max-connections.",
                target=target,
                max_connections=max_connections,
            )
