"""
Two clocks, each for its own job.

Scheduling (every C{callLater}, C{LoopingCall}, heartbeat, dead-peer watch,
deadman timer, retry delay) runs on the reactor's C{seconds()}. Twisted's
reactors use the wall clock there (C{time.time}), so a step of the wall clock
moves every timer: a Pi without a real-time clock boots at the time
fake-hwclock saved, then NTP steps it, often by minutes. A step back of 60 s
kept a motor with C{ttl=0.5} running for over 3 s; a step forward fired
heartbeats and dead-peer timers early. L{schedule_on_monotonic} makes the
reactor schedule on C{time.monotonic}, which never steps (the workaround
Twisted's own ticket about clock changes names, twisted/twisted#2424,
#5552; Twisted itself cannot change the default, as programs read
C{reactor.seconds()} as the time of day).

Timestamps (a reading's C{ts}, when a record was received, C{now} on the web
page) are wall time, from L{wall}: rpisensor never reads the time of day from
the reactor. Components take both, C{clock} (an C{IReactorTime}) and C{wall}
(a function), so tests drive each on its own.
"""

from __future__ import annotations

import time

#: The wall clock: seconds since the epoch, for timestamps only.
wall = time.time


def schedule_on_monotonic(reactor) -> None:
    """
    Make C{reactor} schedule on C{time.monotonic} from now on. Calls already
    scheduled keep their delays. Idempotent; call it before the reactor runs
    (C{twistd rpisensor} and the C{.tac} files do; a program that embeds
    rpisensor may do the same with its own reactor).
    """
    if reactor.seconds == time.monotonic:
        return
    before, now = reactor.seconds(), time.monotonic()
    for call in reactor.getDelayedCalls():
        # A DelayedCall keeps the clock it was made with, and its time on that clock.
        call.time = call.time - before + now
        call.seconds = time.monotonic
    reactor.seconds = time.monotonic
