"""
Helpers for tests, ours and yours: simulated pins you can drive, a fake sysfs
tree for measurement sensors, runners that make thread-pool reads
deterministic, a server on loopback and a one-shot client.

    from rpisensor.testing import start_server, send_message

    async def test_button():
        server = await start_server()
        server.pin("button").drive_low()
        assert await send_message(server.port, "go") == "Button pressed"
        await server.stop()
"""

from rpisensor.testing._files import listening_port, stored_messages, stored_stream
from rpisensor.testing._pins import simulated_pins
from rpisensor.testing._runners import FakeRunner, Job, inline_runner
from rpisensor.testing._server import RunningServer, connect, send_message, start_server
from rpisensor.testing._sysfs import FakeSysfs
from rpisensor.testing._waiting import wait_until

__all__ = [
    "FakeRunner",
    "FakeSysfs",
    "Job",
    "RunningServer",
    "connect",
    "inline_runner",
    "listening_port",
    "send_message",
    "simulated_pins",
    "start_server",
    "stored_messages",
    "stored_stream",
    "wait_until",
]
