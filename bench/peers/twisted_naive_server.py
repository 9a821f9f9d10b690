"""
Peer: the straightforward Twisted server. LineOnlyReceiver with a NUL
delimiter; every "go" calls deferToThread (the reactor's default thread
pool, up to 10 threads), one pool job per request, no sharing or batching.
Usage: python twisted_naive_server.py --port 0 --latency 0.05
"""

from __future__ import annotations

import signal

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineOnlyReceiver

from common import SimulatedButton, announce, answer, parse_args, report_counters


class NaiveSensorProtocol(LineOnlyReceiver):
    delimiter = b"\0"
    MAX_LENGTH = 16 * 1024

    def lineReceived(self, line: bytes) -> None:
        reply = answer(line, None)
        if reply is None:
            return
        if reply == "":  # go
            d = deferToThread(self.factory.button.read)
            d.addCallback(self._send)
        else:
            self._send(reply)

    def _send(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))


class NaiveSensorFactory(Factory):
    protocol = NaiveSensorProtocol
    noisy = False

    def __init__(self, button: SimulatedButton) -> None:
        self.button = button


def main() -> None:
    args = parse_args(__doc__)
    button = SimulatedButton(args.latency)
    port = reactor.listenTCP(args.port, NaiveSensorFactory(button), interface="127.0.0.1")
    reactor.callWhenRunning(
        signal.signal, signal.SIGUSR2, lambda *_: reactor.callFromThread(report_counters, button)
    )
    reactor.callWhenRunning(announce, port.getHost().port)
    reactor.run()


if __name__ == "__main__":
    main()
