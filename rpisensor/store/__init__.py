"""
The collector's store: records of what reporters sent, in a JSON Lines file
or an SQLite database, written by one thread of its own.
"""

from rpisensor.store.files import JsonLinesFile, SQLiteFile, store_file_for
from rpisensor.store.record import Record
from rpisensor.store.writer import STOP_TIMEOUT, StoreClosed, StoreOpenError, StoreService

__all__ = [
    "STOP_TIMEOUT",
    "JsonLinesFile",
    "Record",
    "SQLiteFile",
    "StoreClosed",
    "StoreOpenError",
    "StoreService",
    "store_file_for",
]
