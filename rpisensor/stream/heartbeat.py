"""
The v2 heartbeat, both ways: a side that has sent nothing for C{interval}
seconds sends C{heartbeat}; a side that has heard nothing for C{MISSES}
intervals calls its peer dead. The client announces the interval in its
C{hello} and the server uses the same one, so one option on the client
(C{--dead-peer-timeout}) bounds how long a dead link goes unnoticed on
both ends, even when no reading is due.
"""

from __future__ import annotations

from collections.abc import Callable

from rpisensor.wire import v2

#: Intervals without a byte from the peer before it counts as dead.
MISSES = 3
HEARTBEAT_FRAME = v2.encode(v2.Heartbeat())


def interval_for(dead_peer_timeout: float) -> float:
    """The heartbeat interval that notices a dead peer within C{dead_peer_timeout} seconds."""
    return max(0.1, dead_peer_timeout / MISSES)


class Heartbeat:
    """
    One connection's heartbeat on C{clock}: call L{sent} whenever a frame
    goes out and L{heard} whenever bytes come in; C{send} sends a heartbeat
    frame, C{on_dead} is called once when the peer went quiet. Without
    C{on_dead} it only sends: for a peer that never announced heartbeats of
    its own (a person typing C{subscribe} into nc), whose silence means nothing.
    """

    def __init__(
        self,
        clock,
        interval: float,
        send: Callable[[str], None],
        on_dead: Callable[[float], None] | None,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._send = send
        self._on_dead = on_dead
        self._beat = clock.callLater(interval, self._due)
        self._quiet = None if on_dead is None else clock.callLater(interval * MISSES, self._dead)

    def sent(self) -> None:
        if self._beat is not None and self._beat.active():
            self._beat.reset(self.interval)

    def heard(self) -> None:
        if self._quiet is not None and self._quiet.active():
            self._quiet.reset(self.interval * MISSES)

    def _due(self) -> None:
        self._beat = self._clock.callLater(self.interval, self._due)
        self._send(HEARTBEAT_FRAME)

    def _dead(self) -> None:
        self._quiet = None
        self.stop()
        self._on_dead(self.interval * MISSES)

    def stop(self) -> None:
        for call in (self._beat, self._quiet):
            if call is not None and call.active():
                call.cancel()
        self._beat = self._quiet = None
