"""
Who a reading comes from and how much its time can be trusted: the device
id (stable across restarts) and whether the system clock is synchronised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import re
import socket
from pathlib import Path

_MACHINE_ID = Path("/etc/machine-id")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


def default_device_id(hostname: str | None = None, machine_id_path: Path = _MACHINE_ID) -> str:
    """
    The host name and six hex digits of the machine id, e.g. C{raspberrypi-3d1219}:
    readable, stable across restarts and reboots, and different for two Pis
    that kept the default host name. Without a machine id, the host name alone.
    """
    name = _UNSAFE.sub("-", hostname if hostname is not None else socket.gethostname()).strip("-.:_")
    name = (name or "device")[:40]
    try:
        machine = machine_id_path.read_text().strip()
    except OSError:
        machine = ""
    if not machine:
        return name
    return f"{name}-{hashlib.sha256(machine.encode()).hexdigest()[:6]}"


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux): only the fields up to status
    # matter here; the rest is padding large enough for any architecture.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class ClockState:
    """
    Whether the system clock is synchronised (by NTP or chrony), as the
    kernel says through C{adjtimex(2)}; Python's standard library has no call
    for it. A Pi without a real-time clock starts at the last saved time, so
    readings taken before the network is up carry C{synced: false}.
    """

    def __init__(self) -> None:
        path = ctypes.util.find_library("c")
        try:
            self._adjtimex = ctypes.CDLL(path, use_errno=True).adjtimex
        except (OSError, AttributeError, TypeError):
            self._adjtimex = None

    def synced(self) -> bool:
        """True when the kernel's clock is synchronised; False if not, or if it cannot tell."""
        if self._adjtimex is None:
            return False
        timex = _Timex()
        state = self._adjtimex(ctypes.byref(timex))
        return state not in (-1, _TIME_ERROR) and not timex.status & _STA_UNSYNC
