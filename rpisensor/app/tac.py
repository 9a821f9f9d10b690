"""
What the C{.tac} files under C{tac/} call: the same roles as C{twistd
rpisensor ROLE}, from an argument list a user edits in the file.
"""

from __future__ import annotations

from twisted.application.service import Application
from twisted.python import usage

from rpisensor.app.tap import Options, makeService


def application(name: str, arguments: list[str]):
    """
    The twistd application running the role C{arguments} name, e.g.
    C{application("rpisensor-serve", ["serve", "--listen", "tcp:22000"])}.

    A mistake in the arguments (or in the environment variables a tac file
    reads them from) stops twistd with one line saying what is wrong,
    instead of a traceback.
    """
    options = Options()
    try:
        options.parseOptions(arguments)
    except usage.UsageError as e:
        raise SystemExit(
            f"rpisensor: {e} (check the settings at the top of the .tac file, and the "
            "RPISENSOR_* environment variables it reads)"
        ) from None
    app = Application(name)
    makeService(options).setServiceParent(app)
    return app
