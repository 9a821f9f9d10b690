"""
The console's terminal: lines read with the standard library's C{readline}
(line editing, history kept across sessions) in a thread of their own, since
reading a line blocks; lines shown from the reactor's thread while one is
being typed clear the prompt, print, and draw the prompt and the typed text
again. Piped input (a script, a test) is read the same way, without a
prompt.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

#: Where the typed lines are remembered between sessions, and how many.
HISTORY_FILE = os.path.join(os.path.expanduser("~"), ".rpisensor_history")
HISTORY_LENGTH = 1000

PROMPT = "rpisensor> "


class Terminal:
    """
    @param reactor: lines typed are handed to the reactor's thread with its C{callFromThread}.
    """

    def __init__(self, reactor, stdin=None, stdout=None, history_file: str | None = HISTORY_FILE) -> None:
        self._reactor = reactor
        self._stdin = stdin if stdin is not None else sys.stdin
        self._stdout = stdout if stdout is not None else sys.stdout
        self.interactive = self._stdin.isatty() and self._stdout.isatty()
        self._readline = None
        self._history_file = history_file
        self._lock = threading.Lock()
        #: Whether the prompt is on the screen, waiting for a line (redrawn after a shown line).
        self._prompting = False
        if self.interactive:
            try:
                import readline
            except ImportError:  # a Python built without it: plain lines, still usable
                readline = None
            self._readline = readline
            if readline is not None and history_file is not None:
                readline.set_history_length(HISTORY_LENGTH)
                try:
                    readline.read_history_file(history_file)
                except OSError:
                    pass

    def start(self, on_line: Callable[[str], object], on_end: Callable[[], object]) -> None:
        """Read lines in a daemon thread (it must not keep the process alive) until the input ends."""
        thread = threading.Thread(target=self._read, args=(on_line, on_end), name="console-input", daemon=True)
        thread.start()

    def _read(self, on_line, on_end) -> None:
        while True:
            try:
                if self.interactive:
                    self._prompting = True
                    try:
                        text = input(PROMPT)
                    finally:
                        self._prompting = False
                else:
                    text = self._stdin.readline()
                    if not text:
                        raise EOFError
                    text = text.rstrip("\r\n")
            except (EOFError, OSError, ValueError):  # (ValueError: stdin closed)
                self._reactor.callFromThread(on_end)
                return
            self._reactor.callFromThread(on_line, text)

    def show(self, text: str) -> None:
        """Show one line; on a terminal, above the line being typed."""
        with self._lock:
            if self._readline is not None and self._prompting:
                typed = self._readline.get_line_buffer()
                self._stdout.write(f"\r\x1b[2K{text}\n{PROMPT}{typed}")
            else:
                self._stdout.write(f"{text}\n")
            self._stdout.flush()

    def close(self) -> None:
        """Keep the history; leave the cursor on a fresh line."""
        if self._readline is not None:
            self._stdout.write("\n")
            self._stdout.flush()
            if self._history_file is not None:
                try:
                    self._readline.write_history_file(self._history_file)
                except OSError:
                    pass
