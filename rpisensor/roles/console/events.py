"""
The console's second connection: a live view of the server's stream
(C{subscribe}), so that every change, an output's included, shows as it
happens, whoever caused it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import LoopingCall

from rpisensor.net.request import ClientConnection
from rpisensor.wire import v2

#: Seconds between the heartbeats that keep the view's connection from looking idle.
HEARTBEAT = 10.0


def describe(frame: v2.Reading | v2.Gap) -> str:
    """A pushed entry as the console shows it: C{* led: on}."""
    if isinstance(frame, v2.Gap):
        return f"* readings {frame.first} to {frame.last} are missing ({frame.reason})"
    unit = f" {frame.unit}" if frame.unit else ""
    note = " (state when subscribed)" if frame.snapshot else ""
    return f"* {frame.sensor}: {frame.text}{unit}{note}"


class EventsProtocol(ClientConnection):
    """
    Subscribes for a live view (the state of everything now, then each
    change), shows each entry with C{show}, and acknowledges it, so the
    server's window never fills.

    @param show: called with each line to show.
    """

    def __init__(self, show: Callable[[str], None]) -> None:
        self._show = show
        self._heartbeat: LoopingCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.sendMessage("subscribe")
        self._heartbeat = LoopingCall(self.sendMessage, "heartbeat")
        self._heartbeat.clock = self.clock
        self._heartbeat.start(HEARTBEAT, now=False)

    def messageFromServer(self, text: str) -> None:
        if text.startswith("error:"):
            self._show(f"console: no pushed events: {text[len('error:'):].strip()}")
            self.transport.loseConnection()
            return
        if not v2.is_v2(text):
            return
        try:
            frame = v2.parse(text)
        except v2.FrameError:
            return
        if isinstance(frame, (v2.Reading, v2.Gap)):
            self._show(describe(frame))
        if isinstance(frame, v2.Reading) and not frame.snapshot:
            self.sendMessage(v2.encode(v2.Ack(frame.seq)))
        elif isinstance(frame, v2.Gap):
            self.sendMessage(v2.encode(v2.Ack(frame.last)))

    def connectionLost(self, reason=None) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self.parting_error = None  # (shown already)
        if reason is None:
            super().connectionLost()
        else:
            super().connectionLost(reason)
