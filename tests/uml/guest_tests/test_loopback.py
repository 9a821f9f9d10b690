"""
The guest's network: its loopback is up (guest_run.py brings it up), so a test can run
rpisensor's server inside the guest and talk to it over 127.0.0.1, as serve-on-gpiod tests will.
"""

import pytest_twisted
from rpisensor.testing import send_message, start_server


@pytest_twisted.ensureDeferred
async def test_a_server_in_the_guest_answers_over_loopback():
    server = await start_server()
    try:
        assert await send_message(server.port, "go") == "Button released"
        server.pin("button").drive_low()
        assert await send_message(server.port, "go") == "Button pressed"
    finally:
        await server.stop()
