"""
The console's terminal: lines read with the standard library's C{readline}
(line editing, history kept across sessions) in a thread of their own, since
reading a line blocks; lines shown from the reactor's thread while one is
being typed clear the prompt, print, and draw the prompt and the typed text
again. Piped input (a script, a test) is read the same way, without a
prompt.

While it waits for a line, readline turns the terminal's echo and line
mode off; the console may end then (C{quit} from a script, Ctrl-C, the
server gone), with the reading thread still waiting, so the terminal's
settings are kept at the start and put back at the end.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

try:
    import termios
except ImportError:  # not a POSIX terminal: nothing to put back
    termios = None

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
        self._on_closed: Callable[[], object] | None = None
        self._closed_output = False
        #: The terminal's settings at the start, put back by close().
        self._saved_tty = None
        if self.interactive and termios is not None:
            try:
                self._saved_tty = termios.tcgetattr(self._stdin.fileno())
            except (termios.error, OSError, ValueError):
                pass
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

    def start(
        self,
        on_line: Callable[[str], object],
        on_end: Callable[[], object],
        on_closed: Callable[[], object] | None = None,
    ) -> None:
        """
        Read lines in a daemon thread (it must not keep the process alive)
        until the input ends; C{on_closed} is called once if what is shown
        cannot be written any more (the reader of a pipe left).
        """
        self._on_closed = on_closed
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
            if self._closed_output:
                return
            try:
                if self._readline is not None and self._prompting:
                    typed = self._readline.get_line_buffer()
                    self._stdout.write(f"\r\x1b[2K{text}\n{PROMPT}{typed}")
                else:
                    self._stdout.write(f"{text}\n")
                self._stdout.flush()
            except (BrokenPipeError, ValueError):
                self._output_closed()

    def _output_closed(self) -> None:
        """The reader went away (C{| head}): nothing more is written, not even at exit, and the console ends."""
        self._closed_output = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        if self._on_closed is not None:
            self._reactor.callFromThread(self._on_closed)

    def close(self) -> None:
        """Keep the history; put the terminal's settings back; leave the cursor on a fresh line."""
        if self._saved_tty is not None:
            try:
                termios.tcsetattr(self._stdin.fileno(), termios.TCSADRAIN, self._saved_tty)
            except (termios.error, OSError, ValueError):
                pass
        if self._readline is not None:
            if not self._closed_output:
                self._stdout.write("\n")
                self._stdout.flush()
            if self._history_file is not None:
                try:
                    self._readline.write_history_file(self._history_file)
                except OSError:
                    pass
