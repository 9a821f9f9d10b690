"""
The store of the receiving roles (C{collect}, C{poll --subscribe}): what
reporters and servers sent, in a JSON Lines file, an SQLite database or a
PostgreSQL database, written by one thread of its own.
"""

from rpisensor.store.files import JsonLinesFile, SQLiteFile, store_file_for, store_service
from rpisensor.store.record import HighWaters, Record, StoredRecord
from rpisensor.store.writer import STOP_TIMEOUT, StoreClosed, StoreOpenError, StoreService

__all__ = [
    "STOP_TIMEOUT",
    "HighWaters",
    "JsonLinesFile",
    "Record",
    "SQLiteFile",
    "StoreClosed",
    "StoreOpenError",
    "StoreService",
    "StoredRecord",
    "store_file_for",
    "store_service",
]
