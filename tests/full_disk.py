"""
A store file on a full disk, for tests of write and close failures: the
real JSON Lines file, opened for real, whose writes fail with
C{OSError(ENOSPC)} as a full disk's do; once one has failed, the close fails
the same way (as on file systems that report write errors at the close, NFS).
"""

from __future__ import annotations

import errno
import os

from rpisensor.store import JsonLinesFile


class FullDiskFile(JsonLinesFile):
    """A JSON Lines store that opens, and whose writes (and the close after one) fail with ENOSPC."""

    failed = False

    def _append(self, data: bytes) -> None:
        self.failed = True
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        super().close()
        if self.failed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
