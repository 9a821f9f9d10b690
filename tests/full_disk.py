"""
A store file on a full disk, for tests of write and close failures: the
real JSON Lines code writes through Python's own buffered text stream, whose
raw end fails every write with C{OSError(ENOSPC)}, as a full disk does.
"""

from __future__ import annotations

import errno
import io
import os

from rpisensor.store import JsonLinesFile


class _FullDisk(io.RawIOBase):
    """The raw end of a file on a full disk: every write fails with ENOSPC."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDiskFile(JsonLinesFile):
    """A JSON Lines store that opens, and whose writes (and the close after one) fail with ENOSPC."""

    def open(self) -> None:
        self._file = io.TextIOWrapper(io.BufferedWriter(_FullDisk()), encoding="utf-8")
