"""
Small frames sent at once: TCP_NODELAY for the connections of v2 streams.

A stream's frames are small and each side waits on the other's: the sender
keeps at most a window of readings unacknowledged, the receiver acknowledges
once they are on disk. With Nagle's algorithm (the default) a small write
waits until the peer has ACKed the previous one, and the peer's delayed ACK
holds that back for up to 40 ms on Linux, many times a second: a replay then
runs at a window per 40 ms, and a reading can wait as long. Twisted already
gathers what one reactor turn writes into one send, so turning Nagle off
costs no extra packets for bursts.
"""

from __future__ import annotations


def send_at_once(transport) -> None:
    """Turn Nagle's algorithm off on C{transport} if it is TCP (TLS over TCP too); else nothing."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is None:
        return  # a unix socket, or a test's transport: nothing waits there
    try:
        set_no_delay(True)
    except OSError:
        pass  # the connection is already gone; its loss is reported on its own
