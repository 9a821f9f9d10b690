"""
A real PostgreSQL server for the tests and the benchmarks: C{initdb} into a
temporary directory, the server on a Unix socket in it and on a free
loopback port, run as the C{postgres} user when we are root (PostgreSQL
refuses to run as root), as ourselves otherwise.

Where the binaries are absent the tests skip, saying so; with
C{RPISENSOR_POSTGRES_REQUIRED=1} (CI, which installs them) they fail instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Where Debian puts a PostgreSQL's programs (one directory per major version).
_DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"


def postgres_bindir() -> Path | None:
    """The directory with initdb, pg_ctl and postgres, newest version first; C{None} if absent."""
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    candidates = sorted(glob.glob(_DEBIAN_BINDIRS), key=lambda d: int(Path(d).parent.name), reverse=True)
    for directory in candidates:
        if (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


def missing_reason() -> str | None:
    """Why a real PostgreSQL cannot be started here, or C{None} if it can."""
    bindir = postgres_bindir()
    if bindir is None:
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser (util-linux) is missing"
    return None


def skip_or_fail(pytest) -> None:
    """Skip the calling test saying why PostgreSQL cannot run; fail instead where CI requires it."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("RPISENSOR_POSTGRES_REQUIRED") == "1":
        pytest.fail(f"RPISENSOR_POSTGRES_REQUIRED=1, but PostgreSQL cannot run: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """
    One PostgreSQL cluster of our own. L{start} makes and starts it; L{url}
    is a C{postgresql://} URL for a database and role in it; L{psql} runs SQL
    as the superuser; L{stop}/L{start} restart it (same port, same data);
    L{kill} ends it with SIGKILL; L{destroy} removes it all.

    @param fsync: C{False} for tests (crash safety of the OS is not what they
        test, and a loaded machine's disk is slow); the benchmarks keep it on.
    """

    def __init__(self, fsync: bool = True, settings: dict[str, str] | None = None) -> None:
        self.bindir = postgres_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="rpisensor-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.port = free_port()
        self.settings = {"fsync": "on" if fsync else "off", "listen_addresses": "127.0.0.1",
                         "unix_socket_directories": str(self.base), "port": str(self.port),
                         "max_connections": "200", "log_min_messages": "warning"}  # fmt: skip
        self.settings.update(settings or {})
        self._as_root = os.geteuid() == 0
        if self._as_root:
            os.chown(self.base, pwd.getpwnam("postgres").pw_uid, -1)
        self.superuser = "postgres" if self._as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._initdb()

    def _run(self, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, input=input, cwd=self.base)

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.superuser, "--no-sync",
                  "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip

    def start(self) -> None:
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-o", options, "-w",
                  "-t", "120", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (C{fast}: sessions are ended, C{immediate}: a crash as far as the data knows)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop", check=False)

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the server's main process (its children notice and end)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, 9)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            (self.data / "postmaster.pid").unlink(missing_ok=True)

    def psql(self, sql: str, database: str = "postgres", user: str | None = None) -> str:
        """Run C{sql} (as the superuser, or C{user}); its output, unaligned, tuples only."""
        done = self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                         "-p", str(self.port), "-U", user or self.superuser, "-d", database, input=sql,
                         check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create(self, database: str, role: str) -> str:
        """A login role (not a superuser: grants apply to it) owning a new database; its URL."""
        self.psql(f"CREATE ROLE {role} LOGIN")
        self.psql(f"CREATE DATABASE {database} OWNER {role}")
        return self.url(database, role)

    def url(self, database: str, role: str, tcp: bool = False) -> str:
        """A URL for C{database} as C{role}: over the Unix socket, or loopback TCP."""
        host = "127.0.0.1" if tcp else str(self.socket_dir).replace("/", "%2F")
        return f"postgresql://{role}@{host}:{self.port}/{database}"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
