"""
Why a data file (a store, a journal, an outbox) cannot be opened, in words
a user can act on: SQLite says only "unable to open database file" for a
directory that does not exist or cannot be written.
"""

from __future__ import annotations

import os
from pathlib import Path


def open_error(path: str | os.PathLike, error: BaseException) -> str:
    """The reason C{path} could not be opened: its directory's trouble where that is it, else C{error}."""
    directory = Path(path).absolute().parent
    if not directory.exists():
        return f"its directory {directory} does not exist (create it: mkdir -p {directory})"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"its directory {directory} is not writable by this user (uid {os.getuid()})"
    return str(error) or type(error).__name__
