"""
The grammar of a command message: a verb and its arguments, separated by whitespace.
"""

from __future__ import annotations


def parse_command(text: str) -> tuple[str, list[str]]:
    """
    Split a command message into its lower-cased verb and its arguments.

    Whitespace (including CR/LF a terminal may add) around and between words is
    ignored, so C{" go\\r\\n"} is C{("go", [])}. An empty message gives C{("", [])}.
    """
    words = text.split()
    if not words:
        return "", []
    return words[0].lower(), words[1:]
