"""
Peer: the minimal Twisted server. LineOnlyReceiver with a NUL delimiter; every
"go" is answered inline, on the reactor (the simulated read, with no latency,
in the reactor's thread), through Twisted's buffered transport.write. What the
reactor costs per request, with nothing of its own on top: the reference for
rpisensor's instructions per round trip (bench/cost.py).
Usage: python twisted_inline_server.py --port 0 --latency 0
"""

from __future__ import annotations

import signal

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from common import SimulatedButton, announce, answer, parse_args, report_counters


class InlineSensorProtocol(LineOnlyReceiver):
    delimiter = b"\0"
    MAX_LENGTH = 16 * 1024

    def lineReceived(self, line: bytes) -> None:
        reply = answer(line, self.factory.button)
        if reply is not None:
            self.sendLine(reply.encode("utf-8"))


class InlineSensorFactory(Factory):
    protocol = InlineSensorProtocol
    noisy = False

    def __init__(self, button: SimulatedButton) -> None:
        self.button = button


def main() -> None:
    args = parse_args(__doc__)
    button = SimulatedButton(args.latency)
    port = reactor.listenTCP(args.port, InlineSensorFactory(button), interface="127.0.0.1")
    reactor.callWhenRunning(
        signal.signal, signal.SIGUSR2, lambda *_: reactor.callFromThread(report_counters, button)
    )
    reactor.callWhenRunning(announce, port.getHost().port)
    reactor.run()


if __name__ == "__main__":
    main()
