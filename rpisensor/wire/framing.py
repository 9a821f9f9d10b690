"""
One message on the wire: UTF-8 text ended by one NUL byte, as pure functions.
"""

from __future__ import annotations

DELIMITER = b"\0"

#: Default largest message body, in bytes, not counting the NUL.
#: Generous for sensor text and small enough that a peer cannot make us
#: buffer much: the tutorial's own clients read in 1-4 KiB blocks.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024


class MessageError(ValueError):
    """A message cannot be put on, or taken off, the wire."""


def encode(text: str) -> bytes:
    """
    Turn C{text} into the bytes of one message body (without the NUL).

    @raise MessageError: C{text} contains a NUL, which would end the message
        early and corrupt every message after it.
    """
    if "\0" in text:
        raise MessageError(
            f"message text contains a NUL character at index {text.index(chr(0))}; "
            "NUL ends a message on the wire, so it cannot appear inside one"
        )
    return text.encode("utf-8")


def decode(body: bytes) -> str:
    """
    Turn the bytes of one message body into text.

    @raise MessageError: C{body} is not valid UTF-8.
    """
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(
            f"message is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start})"
        ) from None


def frame(text: str) -> bytes:
    """The full wire form of one message: the encoded body and its NUL."""
    return encode(text) + DELIMITER
