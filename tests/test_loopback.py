"""
The server over real loopback TCP, written with pytest-twisted and
rpisensor.testing, as a user's pytest suite would be.
"""

import pytest_twisted

from rpisensor.testing import connect, send_message, simulated_pins, start_server, wait_until


@pytest_twisted.ensureDeferred
async def test_go_follows_the_pin(reactor):
    """'go' answers the simulated pin's level, pressed when driven low."""
    server = await start_server(reactor=reactor)
    try:
        assert await send_message(server.port, "go") == "Button released"
        server.pin("button").drive_low()
        assert await send_message(server.port, "go") == "Button pressed"
        server.pin("button").drive_high()
        assert await send_message(server.port, "go") == "Button released"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_slow_read_does_not_hold_other_clients(reactor):
    """With a 300 ms read pending for one client, another client's ping is answered first."""
    server = await start_server(reactor=reactor, backend=simulated_pins(latency=0.3))
    slow, quick = await connect(server.port), await connect(server.port)
    order = []
    try:
        server.backend.pause_reads()  # the read stays pending until we say so: no timing
        go = slow.request("go").addCallback(lambda text: order.append(("go", text)))
        await wait_until(lambda: server.backend.reads == 1)
        order.append(("ping", await quick.request("ping")))
        server.backend.resume_reads()
        await go
        assert order == [("ping", "pong"), ("go", "Button released")]
    finally:
        server.backend.resume_reads()
        slow.transport.loseConnection()
        quick.transport.loseConnection()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_ten_concurrent_go_one_read(reactor):
    """Ten clients' 'go' during one slow read cause exactly one read, and ten replies."""
    server = await start_server(reactor=reactor, backend=simulated_pins(latency=0.3))
    clients = [await connect(server.port) for _ in range(10)]
    try:
        server.backend.pause_reads()
        replies = [client.request("go") for client in clients]
        await wait_until(lambda: server.reader.waiting("button") == 10)
        server.backend.resume_reads()
        assert [await reply for reply in replies] == ["Button released"] * 10
        assert server.backend.reads == 1
    finally:
        server.backend.resume_reads()
        for client in clients:
            client.transport.loseConnection()
        await server.stop()
