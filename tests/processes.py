"""
Run C{twistd} as a real subprocess, as a user would, for end-to-end tests.

    twistd = Twistd("rpisensor", "serve", "--gpio", "sim",
                    "--listen", "tcp:0:interface=127.0.0.1")
    self.addCleanup(twistd.close)
    port = twistd.wait_port()
    with connect_tcp(port) as sock:
        assert request(sock, b"go") == b"Button released\\0"
    exited = twistd.stop()
    assert exited.code == 0, exited.log

Every wait polls for a condition with a generous deadline (L{DEADLINE}) and
never measures how long anything took, so a loaded machine only makes the
tests slower, not red. The child runs the interpreter running the tests
(C{sys.executable}), so it sees the same installed packages and plugins.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Seconds any one wait may last before the test fails with the log so far.
DEADLINE = 30.0

#: Seconds between two looks at the log or the process.
_POLL_INTERVAL = 0.05

#: Run in the foreground, and write no pid file (two tests may run at once).
FOREGROUND = ("-n", "--pidfile=")

def twistd_command(*args: str) -> list[str]:
    """
    The argv that runs this interpreter's C{twistd} with C{args}.

    C{python -m twisted.scripts.twistd} does nothing (that module has no
    C{__main__} block), so this runs the C{twistd} script installed beside
    C{sys.executable}, with C{sys.executable}; failing that, Twisted's entry
    point through C{-c}.
    """
    script = Path(sys.executable).parent / "twistd"
    if script.is_file():
        return [sys.executable, str(script), *args]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args]


@dataclass(frozen=True)
class Exited:
    """
    A finished C{twistd}.

    @ivar code: its exit status; negative when a signal killed it.
    @ivar log: everything it wrote to stdout and stderr, in order.
    """

    code: int
    log: str


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    if env:
        merged.update(env)
    return merged


def run_twistd(
    *args: str, cwd: str | None = None, env: Mapping[str, str] | None = None
) -> Exited:
    """
    Run C{twistd args} until it exits on its own (C{--help}, bad options, a
    port in use) and return its status and output.

    @param cwd: working directory; a fresh temporary one, removed afterwards,
        when C{None}.
    @param env: variables added to this process's environment.
    @raise AssertionError: it is still running after L{DEADLINE} seconds (it
        is killed first).
    """
    with tempfile.TemporaryDirectory(prefix="rpisensor-") as scratch:
        try:
            finished = subprocess.run(
                twistd_command(*args),
                cwd=cwd or scratch,
                env=_child_env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=DEADLINE,
            )
        except subprocess.TimeoutExpired as e:
            output = (e.output or b"").decode("utf-8", "replace")
            raise AssertionError(
                f"twistd {' '.join(args)} still running after {DEADLINE} s:\n{output}"
            ) from None
    return Exited(finished.returncode, finished.stdout.decode("utf-8", "replace"))


def daemon_child_done(pid_file: str | os.PathLike, log_file: str | os.PathLike, says: str) -> str:
    """
    Wait for what a daemonizing twistd's child does after its start-up failed:
    it tells the waiting parent (which then exits), and only then removes its
    pid file and writes the error to its log. Return the log once both are done.

    @param says: text the log must hold by then.
    """
    pid_file, log_file = Path(pid_file), Path(log_file)

    def log() -> str:
        return log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""

    wait_until(lambda: not pid_file.exists(), describe=lambda: f"{pid_file} is still there")
    wait_until(lambda: says in log(), describe=lambda: f"{log_file} does not say {says!r}:\n{log()}")
    return log()


class Twistd:
    """
    One C{twistd -n --pidfile= ARGS} running in the background, its stdout and
    stderr going to a log file in its working directory.

    Always register L{close} as a cleanup: it kills the process if the test
    did not stop it, and removes the temporary directory.

    @ivar directory: the child's working directory (a fresh temporary one
        unless C{cwd} is given); a good place for unix socket files.
    @ivar log_path: the file holding everything the child wrote.
    """

    def __init__(
        self,
        *args: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        foreground: tuple[str, ...] = FOREGROUND,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        """
        Start C{twistd foreground args}, e.g. C{Twistd("rpisensor", "--gpio", "sim")}
        or, for a tac file, C{Twistd("-y", path)}.

        @param env: variables added to this process's environment.
        @param wrapper: a command that runs twistd, e.g. C{("ip", "netns", "exec", NAME)};
            it must exec twistd, so that signals reach it.
        """
        self.args = (*foreground, *args)
        self._scratch = tempfile.mkdtemp(prefix="rpisensor-")
        self.directory = cwd or self._scratch
        self.log_path = os.path.join(self._scratch, "twistd.out")
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*wrapper, *twistd_command(*self.args)],
            cwd=self.directory,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        """Everything the child has written so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = DEADLINE) -> re.Match[str]:
        """
        Wait until the log has a match for the regular expression C{pattern}.

        @return: the first match.
        @raise AssertionError: the child exits, or C{timeout} seconds pass,
            first; the message holds the log.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None
            # Read the log after asking whether the child exited, so a line
            # written just before it exited is still seen.
            text = self.log()
            match = regex.search(text)
            if match:
                return match
            if exited:
                raise AssertionError(
                    f"twistd exited with {self.process.returncode} before logging "
                    f"{regex.pattern!r}:\n{text}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"twistd did not log {regex.pattern!r} within {timeout} s:\n{text}"
                )
            time.sleep(_POLL_INTERVAL)

    def wait_listening(self, description: str | None = None, timeout: float = DEADLINE) -> str:
        """
        Wait for C{Listening on DESCRIPTION (ADDRESS)} and return ADDRESS as
        logged: C{port N} for TCP, the socket's path for unix.

        @param description: the endpoint string as given to C{--listen}; any
            listener when C{None}.
        """
        wanted = re.escape(description) if description is not None else r"\S+"
        pattern = rf"Listening on {wanted} \((?P<address>[^)\n]*)\)"
        return self.wait_for(pattern, timeout).group("address")

    def wait_port(self, description: str | None = None, timeout: float = DEADLINE) -> int:
        """
        Wait until a TCP listener is announced (L{wait_listening}) and return
        its port number, the real one when the endpoint asked for port 0.
        """
        address = self.wait_listening(description, timeout)
        if not re.fullmatch(r"port \d+", address):
            raise AssertionError(f"expected a port number, got {address!r}:\n{self.log()}")
        return int(address.split()[1])

    def stop(self, signum: int = signal.SIGTERM, timeout: float = DEADLINE) -> Exited:
        """
        Send C{signum} (unless it already exited) and wait for the child to exit.

        @return: its exit status and whole log.
        @raise AssertionError: it is still running after C{timeout} seconds
            (it is then killed).
        """
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"twistd still running {timeout} s after signal {signum}:\n{self.log()}"
            ) from None
        self._log_file.close()
        return Exited(code, self.log())

    def stop_cleanly(self, signum: int = signal.SIGTERM) -> str:
        """
        Stop the child and check it ended well: status 0, no traceback in its
        log. Return the log.

        @raise AssertionError: it did not, with the log.
        """
        exited = self.stop(signum)
        if exited.code != 0 or "Traceback" in exited.log:
            raise AssertionError(f"twistd ended with status {exited.code}:\n{exited.log}")
        return exited.log

    def close(self) -> None:
        """Kill the child if it still runs, and remove the temporary directory."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._log_file.close()
        shutil.rmtree(self._scratch, ignore_errors=True)


def connect_tcp(port: int, host: str = "127.0.0.1", timeout: float = DEADLINE) -> socket.socket:
    """A blocking TCP client socket connected to C{host:port}, IPv6 if C{host} has a colon."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def connect_unix(path: str, timeout: float = DEADLINE) -> socket.socket:
    """A blocking client socket connected to the unix socket at C{path}."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def request(sock: socket.socket, command: bytes) -> bytes:
    """
    Send C{command} and its NUL, then read until the data ends with a NUL, as
    the tutorial's DataClient1 does; return what was read, NUL included.

    @raise AssertionError: the server closed the connection first.
    """
    sock.sendall(command + b"\0")
    return read_reply(sock)


def read_reply(sock: socket.socket) -> bytes:
    """
    Read until the data ends with a NUL (DataClient1's C{readServerData}).

    @raise AssertionError: the server closed the connection first.
    """
    data = b""
    while data[-1:] != b"\0":
        block = sock.recv(4096)
        if not block:
            raise AssertionError(f"connection closed before the end of a reply; got {data!r}")
        data += block
    return data


def wait_until(predicate, timeout: float = DEADLINE, describe=None):
    """
    Call C{predicate()} until it returns something true, and return that.

    @param describe: a callable giving text for the failure message (a log,
        the data so far), called only if the wait fails.
    @raise AssertionError: still false after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f":\n{describe()}" if describe is not None else ""
            raise AssertionError(f"condition still false after {timeout} s{detail}")
        time.sleep(_POLL_INTERVAL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for programs that cannot take port 0)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
