"""
The store's formats, chosen by the file's suffix: C{.jsonl} files get one
JSON object a line (L{rpisensor.store.jsonl}); C{.sqlite} and C{.db} files
get tables (L{rpisensor.store.sqlite}); a C{postgresql://} URL names a
PostgreSQL database (L{rpisensor.store.postgresql}).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rpisensor.store.jsonl import JsonLinesFile
from rpisensor.store.sqlite import SQLiteFile

if TYPE_CHECKING:
    from rpisensor.store.postgresql import PostgresStore

__all__ = ["JsonLinesFile", "SQLiteFile", "store_file_for"]


def store_file_for(path: str | Path, timescale: bool = False) -> JsonLinesFile | SQLiteFile | PostgresStore:
    """
    The store for C{path}, chosen by its suffix, or a PostgreSQL database for
    a C{postgresql://} URL (C{timescale}: with TimescaleDB's hypertable).

    @raise ValueError: the suffix is not C{.jsonl}, C{.sqlite} or C{.db}, or
        the URL is not one the PostgreSQL store takes (the message says why).
    """
    if isinstance(path, str) and path.lower().startswith(("postgresql://", "postgres://")):
        return _postgres_store(path, timescale)
    if timescale:
        raise ValueError("--timescale is for a PostgreSQL store (--store postgresql://...)")
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


def _postgres_store(url: str, timescale: bool) -> PostgresStore:
    try:
        import psycopg  # noqa: F401 (an optional dependency: say how to get it)
    except ImportError:
        raise ValueError(
            "a PostgreSQL store needs psycopg 3: pip install 'rpisensor[postgresql]'"
        ) from None
    from rpisensor.store.postgresql import PostgresStore

    return PostgresStore(url, timescale)


def store_service(reactor, path: str, timescale: bool = False):
    """
    The L{rpisensor.store.StoreService} writing to C{path} (see
    L{store_file_for}); it opens the store when it starts.
    """
    from rpisensor.store.writer import StoreService

    file = store_file_for(path, timescale)
    if isinstance(file, (JsonLinesFile, SQLiteFile)):
        return StoreService(reactor, file)
    from rpisensor.store.postgresql import PostgresStoreService

    return PostgresStoreService(reactor, file)
