"""
The message grammar, as pure functions with no Twisted imports, so peers,
tools and tests can share it: framing (UTF-8 text ended by one NUL) and
commands (a verb and its arguments).
"""

from rpisensor.wire.commands import parse_command
from rpisensor.wire.framing import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DELIMITER,
    MessageError,
    decode,
    encode,
    frame,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DELIMITER",
    "MessageError",
    "decode",
    "encode",
    "frame",
    "parse_command",
]
