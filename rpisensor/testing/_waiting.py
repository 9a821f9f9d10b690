"""
Waiting for a condition without blocking the reactor.
"""

from __future__ import annotations

from twisted.internet.task import deferLater


async def wait_until(predicate, reactor=None, timeout: float = 30.0, interval: float = 0.01) -> None:
    """
    Wait, without blocking the reactor, until C{predicate()} is true.

    @raise TimeoutError: still false after C{timeout} seconds (a generous
        deadline for loaded machines, not a measurement).
    """
    if reactor is None:
        from twisted.internet import reactor
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise TimeoutError(f"condition still false after {timeout} s: {predicate!r}")
        await deferLater(reactor, interval, lambda: None)
