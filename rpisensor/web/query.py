"""
Query parameters, checked: a parameter that is unknown, repeated, too long
or not of its kind is a C{400} with a message saying which and why.
"""

from __future__ import annotations

import json
import math

from rpisensor.web.feed import parse_time

#: The longest value of one parameter, in bytes.
MAX_VALUE = 200


class BadQuery(ValueError):
    """A query parameter is wrong; the message says which and what is allowed."""


#: Reason phrases Twisted does not know.
_PHRASES = {429: b"Too Many Requests"}


def error_response(request, code: int, message: str) -> bytes:
    """A JSON error body, C{{"error": message}}, with its status code."""
    request.setResponseCode(code, _PHRASES.get(code))
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps({"error": message}, ensure_ascii=False).encode() + b"\n"


def json_response(request, body) -> bytes:
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class Query:
    """
    The parameters of C{request}, each given at most once.

    @param allowed: the names this resource takes; any other is an error.
    """

    def __init__(self, request, allowed: tuple[str, ...]) -> None:
        self._values: dict[str, str] = {}
        for raw_name, values in (request.args or {}).items():
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                raise BadQuery(f"a parameter name is not UTF-8: {raw_name[:40]!r}") from None
            if name not in allowed:
                known = ", ".join(allowed) if allowed else "none"
                raise BadQuery(f"unknown parameter {name[:40]!r}; this takes: {known}")
            if len(values) != 1:
                raise BadQuery(f"parameter {name!r} is given {len(values)} times; give it once")
            value = values[0]
            if len(value) > MAX_VALUE:
                raise BadQuery(f"parameter {name!r} is longer than {MAX_VALUE} bytes")
            try:
                self._values[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadQuery(f"parameter {name!r} is not UTF-8") from None

    def has(self, name: str) -> bool:
        return name in self._values

    def text(self, name: str) -> str | None:
        return self._values.get(name)

    @staticmethod
    def parse_integer(name: str, value: str | bytes, minimum: int = 0, maximum: int | None = None) -> int:
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise BadQuery(f"{name} must be a whole number, got {value[:40]!r}")
        number = int(text)
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise BadQuery(f"{name} must be {bound}, got {number}")
        return number

    def integer(self, name: str, minimum: int = 0, maximum: int | None = None) -> int | None:
        value = self._values.get(name)
        return None if value is None else self.parse_integer(name, value, minimum, maximum)

    def seconds(self, name: str, maximum: float) -> float | None:
        """A positive number of seconds, at most C{maximum}."""
        value = self._values.get(name)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise BadQuery(f"{name} must be a number of seconds, got {value[:40]!r}") from None
        if not math.isfinite(number) or not 0 < number <= maximum:
            raise BadQuery(f"{name} must be more than 0 and at most {maximum:g} seconds, got {value[:40]!r}")
        return number

    def time(self, name: str) -> float | None:
        """An ISO 8601 time such as C{2026-12-01T22:00:00Z}, as epoch seconds."""
        value = self._values.get(name)
        if value is None:
            return None
        try:
            return parse_time(value)
        except (ValueError, OverflowError, OSError):
            raise BadQuery(
                f"{name} must be an ISO 8601 time such as 2026-12-01T22:00:00Z, got {value[:40]!r}"
            ) from None
