"""
Replies sent in the reactor turn that made them.

Twisted's TCP transport buffers every C{write} and sends it on the reactor's
next turn: C{write} registers the socket for writing (C{epoll_ctl}), the next
C{epoll_wait} says it is writable, C{doWrite} sends, and the socket is
unregistered (C{epoll_ctl} again). For a server that answers each request at
once that is a second loop iteration and two system calls per reply
(twisted/twisted#5303 asks for writes that go out at once; it is open).

A connection that knows a reply now may send it itself, on the transport's
socket (L{ISystemHandle}, public), but only when Twisted holds nothing unsent
for that connection: a reply sent past bytes still in the transport's buffer
would overtake them. No public API says whether that buffer is empty, so this
module is the one place that looks into it (C{dataBuffer} and
C{_tempDataLen} of C{twisted.internet.abstract.FileDescriptor}, the base of
every POSIX reactor's TCP transport), and L{direct_socket} offers the socket
only for a transport that has both. C{tests/test_direct.py} checks that
seam against the installed Twisted: a reply goes out before the reactor
turns when nothing is buffered, and queues behind buffered bytes otherwise.

Whatever the socket does not take at once (it is full, or the connection
failed) goes through C{transport.write} as usual: Twisted then waits for room,
pauses the producer when its buffer is full, and reports a failed connection
through C{connectionLost}.
"""

from __future__ import annotations

import socket

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.tcp import Connection


def direct_socket(transport) -> socket.socket | None:
    """
    The socket of C{transport} if replies may be sent on it directly: a plain
    TCP connection of Twisted's POSIX reactors (not TLS, not a test double);
    else C{None}, and every write goes through the transport.
    """
    if not isinstance(transport, Connection) or ISSLTransport.providedBy(transport):
        return None
    if not (hasattr(transport, "_tempDataLen") and hasattr(transport, "dataBuffer")):
        return None  # a Twisted whose buffer this module does not know: never bypass it
    return transport.getHandle()


def write_now(transport, sock: socket.socket | None, data: bytes) -> None:
    """
    Send C{data} on C{sock} now if C{transport} holds nothing unsent; what the
    socket does not take, or all of it otherwise, goes through C{transport.write}.

    @param sock: L{direct_socket}'s answer for C{transport}.
    """
    if sock is not None and not transport._tempDataLen and not transport.dataBuffer and transport.connected:
        try:
            sent = sock.send(data)
        except OSError:
            # Full (EAGAIN), or the connection failed: Twisted's write waits for
            # room, or finds the failure and reports it through connectionLost.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
