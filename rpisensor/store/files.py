"""
The store's file formats, chosen by the file's suffix: C{.jsonl} files get
one JSON object a line (L{rpisensor.store.jsonl}); C{.sqlite} and C{.db}
files get tables (L{rpisensor.store.sqlite}).
"""

from __future__ import annotations

from pathlib import Path

from rpisensor.store.jsonl import JsonLinesFile
from rpisensor.store.sqlite import SQLiteFile

__all__ = ["JsonLinesFile", "SQLiteFile", "store_file_for"]


def store_file_for(path: str | Path) -> JsonLinesFile | SQLiteFile:
    """
    The store for C{path}, chosen by its suffix.

    @raise ValueError: the suffix is not C{.jsonl}, C{.sqlite} or C{.db}.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return JsonLinesFile(path)
    if suffix in (".sqlite", ".db"):
        return SQLiteFile(path)
    raise ValueError(
        f"cannot tell the store format of {str(path)!r}: "
        "use a .jsonl file (JSON Lines) or a .sqlite/.db file (SQLite)"
    )
