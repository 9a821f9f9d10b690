"""
Socket activation as systemd does it: the listening socket is handed to
twistd as file descriptor 3 with LISTEN_FDS/LISTEN_PID, and `serve --listen
systemd:domain=INET:index=0` answers on it.
"""

import os
import signal
import socket
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.processes import DEADLINE, _child_env, connect_tcp, request, twistd_command, wait_until


class SocketActivationTests(SynchronousTestCase):
    def test_serve_on_inherited_socket(self):
        """A socket systemd opened is used as is: a tutorial client's go is answered on it."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        log_path = os.path.join(directory, "twistd.log")
        command = twistd_command("-n", "--pidfile=", "rpisensor", "serve", "--gpio", "sim",
                                 "--listen", "systemd:domain=INET:index=0")  # fmt: skip
        env = _child_env(None)
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = "rpisensor.socket"  # systemd 227+ always names them
        # systemd sets LISTEN_PID to the service's pid: the shell's, which exec keeps.
        script = 'LISTEN_PID=$$ exec "$@"'

        def put_socket_at_fd_3():
            os.dup2(listener.fileno(), 3)
            os.set_inheritable(3, True)

        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["sh", "-c", script, "sh", *command], cwd=directory, env=env, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=put_socket_at_fd_3, close_fds=False,
            )  # fmt: skip
        self.addCleanup(lambda: process.poll() is None and process.kill())
        listener.close()  # only the child holds it now

        def read_log():
            with open(log_path) as f:
                return f.read()

        wait_until(lambda: "Listening on systemd:domain=INET:index=0" in read_log(), describe=read_log)
        with connect_tcp(port) as sock:
            self.assertEqual(request(sock, b"go"), b"Button released\0")
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=DEADLINE), 0, read_log())


class NotifyTests(SynchronousTestCase):
    """Type=notify: the messages a real twistd sends to the test's own NOTIFY_SOCKET."""

    def test_ready_once_every_listener_is_up_watchdog_and_stopping(self):
        from tests.processes import Twistd

        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="rpisensor-")  # short: a unix socket's path is at most 107 bytes
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(DEADLINE)
        twistd = Twistd(
            "rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0:interface=127.0.0.1",
            "--web", "tcp:0", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
        )  # fmt: skip
        self.addCleanup(twistd.close)
        messages = []
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        ready = next(m for m in messages if m.startswith("READY=1"))
        # Both listeners had announced their ports before READY=1 was sent.
        log = twistd.log()
        self.assertEqual(log.count("Listening on tcp:0:interface=127.0.0.1"), 2, log)
        fields = dict(line.split("=", 1) for line in ready.splitlines())
        self.assertEqual(fields["MAINPID"], str(twistd.process.pid))
        self.assertIn("Listening on tcp:0", fields["STATUS"])
        # The watchdog: every 0.2 s (half of 0.4 s), from the reactor.
        beats = 0
        while beats < 3:
            if sock.recv(4096) == b"WATCHDOG=1":
                beats += 1
        twistd.process.send_signal(signal.SIGTERM)
        while True:
            message = sock.recv(4096)
            if message != b"WATCHDOG=1":
                break
        self.assertEqual(message, b"STOPPING=1")
        self.assertEqual(twistd.stop().code, 0)
