"""
The tutorial's way of reporting, for a server that does not speak the event
streams (its DataServer3): each text as it is taken, the current state on
connect, nothing numbered. A plain-text server cannot acknowledge anything,
so this path never touches the outbox: what it sends stays there until a
collector stores it (or the outbox's bound lets it go, with a gap record).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

#: Texts taken while the connection was still negotiating, kept for a plain-text
#: server at most (then the oldest go): a minute of a busy reporter.
MAX_EARLY_TEXTS = 1000


class PlainPusher:
    """
    Sends texts through C{send} as they come; while the transport is paused,
    the latest text of each input waits, and goes (in input order) on resume.

    Before it is L{start}ed (the connection is still negotiating) texts are
    kept, in order, after the state when the connection was made (C{current});
    started, it sends them first, so that a press in the first seconds still
    shows on the server.
    """

    def __init__(self, send: Callable[[str], None], current: dict[str, str]) -> None:
        self._send = send
        self.started = False
        self.paused = False
        self._early: list[tuple[str, str]] = list(current.items())
        self._waiting: OrderedDict[str, str] = OrderedDict()

    def text(self, name: str, text: str) -> None:
        """A reporter's text listener: one input's text."""
        if not self.started:
            self._early.append((name, text))
            del self._early[:-MAX_EARLY_TEXTS]
        elif self.paused:
            self._waiting[name] = text
            self._waiting.move_to_end(name)
        else:
            self._send(text)

    def start(self) -> None:
        """
        Plain text it is: the state when the connection was made and the texts
        taken since go now, in order (DataClient3 sends the state on connect).
        """
        self.started = True
        early, self._early = self._early, []
        for name, text in early:
            self.text(name, text)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        while self._waiting and not self.paused:
            _, text = self._waiting.popitem(last=False)
            self._send(text)
