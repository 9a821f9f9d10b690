"""
The poll role over real loopback TCP, with pytest-twisted and
rpisensor.testing: it keeps polling across a restart of the server.

Every wait is for a condition (L{rpisensor.testing.wait_until}, 30 s
deadline); nothing asserts a duration.
"""

import pytest_twisted
from twisted.logger import globalLogPublisher

from rpisensor.roles.poll.service import PollSettings, build_poll_service
from rpisensor.testing import start_server, wait_until


@pytest_twisted.ensureDeferred
async def test_poll_resumes_after_server_restart(reactor):
    """Polling a server that stops and starts again on the same port resumes by itself."""
    logged = []

    def observe(event):
        if event.get("log_format") == "Message from {peer}: {text}":
            logged.append((event["peer"], event["text"]))

    replies = []
    server = await start_server(reactor=reactor)
    port = server.port
    service = build_poll_service(
        reactor, PollSettings(server.endpoint, interval=0.1, timeout=10, max_retry_delay=2), on_reply=replies.append
    )
    globalLogPublisher.addObserver(observe)
    service.startService()
    try:
        first = await service.whenConnected()
        await wait_until(lambda: len(replies) >= 2, reactor)
        assert set(replies) == {"Button released"}
        assert (f"127.0.0.1:{port}", "Button released") in logged

        await server.stop()
        await first.lost
        server = await start_server(reactor=reactor, port=port)
        # Only the new server can say "pressed": replies from before cannot pass for it.
        server.pin("button").drive_low()
        await wait_until(lambda: replies.count("Button pressed") >= 2, reactor)
        second = await service.whenConnected()
        assert second is not first
        assert replies[-1] == "Button pressed"
        assert logged.count((f"127.0.0.1:{port}", "Button pressed")) >= 2
    finally:
        globalLogPublisher.removeObserver(observe)
        await service.stopService()
        await server.stop()
