"""
The Raspberry Pi 40-pin header: which BOARD pins are GPIO, and their BCM numbers.
"""

from __future__ import annotations

from rpisensor.hw.interfaces import NUMBERINGS, PinError

#: Header pin (BOARD) -> Broadcom GPIO number (BCM), for every GPIO pin.
BOARD_TO_BCM = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23,
    18: 24, 19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5,
    31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip

BCM_TO_BOARD = {bcm: board for board, bcm in BOARD_TO_BCM.items()}


def to_bcm(numbering: str, channel: int) -> int:
    """
    The BCM number of C{channel} given in C{numbering}.

    @raise PinError: C{channel} is not a GPIO pin in that numbering; the message
        says what is.
    """
    if numbering not in NUMBERINGS:
        raise PinError(f"unknown numbering {numbering!r}; use 'board' or 'bcm'")
    if numbering == "bcm":
        if channel in BCM_TO_BOARD:
            return channel
        raise PinError(f"BCM {channel} is not a GPIO on the 40-pin header; use 0 to 27")
    if channel in BOARD_TO_BCM:
        return BOARD_TO_BCM[channel]
    if 1 <= channel <= 40:
        raise PinError(
            f"BOARD pin {channel} is a power or ground pin, not a GPIO; "
            f"GPIO pins are {', '.join(map(str, sorted(BOARD_TO_BCM)))}"
        )
    raise PinError(f"BOARD pin {channel} does not exist; the header has pins 1 to 40")
