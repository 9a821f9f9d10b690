"""
The options of the roles that keep a journal on the Pi: C{report} (its
outbox, C{--outbox...}) and C{serve} (its history, C{--journal...}); both
also name the device and bound the readings sent and not yet acknowledged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from twisted.python import usage

from rpisensor.roles._options.base import FoldedOptions, count

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(KB|MB|GB|KIB|MIB|GIB)\Z", re.IGNORECASE)
_UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


@dataclass(frozen=True)
class JournalSettings:
    """
    Where and how a role keeps its journal.

    @ivar path: the SQLite file, or C{None} for memory only.
    @ivar max_entries: the most entries kept, or C{None} when bounded by C{max_bytes}.
    @ivar max_bytes: the most bytes on disk, or C{None} when bounded by entries.
    @ivar device: this Pi's id in the stream, or C{None} for the default.
    @ivar window: the most entries sent and not yet acknowledged.
    """

    path: Path | None
    max_entries: int | None
    max_bytes: int | None
    sync: str
    device: str | None
    window: int


def state_directory() -> Path:
    """systemd's C{StateDirectory=} (C{$STATE_DIRECTORY}) when set, else the working directory."""
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(directory) if directory else Path.cwd()


def parse_bound(option: str, text: str) -> tuple[int | None, int | None]:
    """C{"100000"} (entries) or C{"50MB"} (bytes, also KB, GB, KiB, MiB, GiB): C{(entries, bytes)}."""
    text = text.strip()
    if text.isdigit():
        return count(option, text, minimum=2), None
    match = _SIZE.match(text)
    if match is None:
        raise usage.UsageError(
            f"--{option} must be a number of entries (100000) or a size (50MB, 1GiB), got {text!r}"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 64 * 1024:
        raise usage.UsageError(f"--{option} must be at least 64KB, got {text!r}")
    return None, size


def journal_options(name: str, default_file: str, what: str, window: int = 1000) -> type[FoldedOptions]:
    """
    The options of one journal, all named after it: C{--NAME FILE|none},
    C{--NAME-max}, C{--NAME-sync}; plus C{--device} and C{--window}.

    @param what: how the help text describes what the journal keeps.
    @param window: the default C{--window}.
    """

    class JournalOptions(FoldedOptions):
        optParameters = [
            [name, None, default_file,
             f"SQLite file {what}, relative to the state directory (systemd's StateDirectory=, "
             f"else the working directory); 'none' keeps it in memory only, so a restart loses "
             f"it. Example: --{name} /var/lib/rpisensor/{default_file}"],
            [f"{name}-max", None, "1000000",
             f"The most entries (a number) or bytes (50MB) the {name} keeps; beyond it the "
             f"oldest go. Example: --{name}-max 100MB"],
            [f"{name}-sync", None, "batch",
             "batch: commits reach the disk (fsync) once a second, so a power cut can lose "
             "the last second's readings (a killed process loses none); full: every commit "
             f"is synced, for zero loss at the cost of an SD-card write per reading. "
             f"Example: --{name}-sync full"],
            ["device", None, None,
             "This Pi's name in the stream, stable across restarts. Default: the host name "
             "and six hex digits of /etc/machine-id (e.g. raspberrypi-3d1219). "
             "Example: --device greenhouse"],
            ["window", None, str(window),
             "The most readings sent and not yet acknowledged. Example: --window 200"],
        ]  # fmt: skip

        def postOptions(self) -> None:
            super().postOptions()
            self[f"{name}-max"] = parse_bound(f"{name}-max", self[f"{name}-max"])
            if self[f"{name}-sync"] not in ("batch", "full"):
                raise usage.UsageError(f"--{name}-sync must be batch or full, got {self[f'{name}-sync']!r}")
            if self["device"] is not None and not _DEVICE.match(self["device"]):
                raise usage.UsageError(
                    f"--device must be 1 to 64 letters, digits, '.', '_', ':' or '-', got {self['device']!r}"
                )
            self["window"] = count("window", self["window"], minimum=1)

        def journal_settings(self) -> JournalSettings:
            entries, size = self[f"{name}-max"]
            where = self[name]
            path = None if where.lower() == "none" else state_directory() / where
            return JournalSettings(path, entries, size, self[f"{name}-sync"], self["device"], self["window"])

    JournalOptions.__name__ = JournalOptions.__qualname__ = f"{name.capitalize()}Options"
    return JournalOptions
