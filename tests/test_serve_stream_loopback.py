"""
C{serve}'s stream over real loopback TCP, in process with the real reactor
(pytest-twisted): a subscriber that speaks the v2 frames gets every change
the sampler recorded, in order, across a reconnect, compared with the
journal file's contents (never with timing); and the simulated C{sim button
press} reaches a subscription.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest_twisted
from twisted.internet.task import LoopingCall

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.serve.publishing import PublishSettings, open_publishing
from rpisensor.roles.serve.service import build_server_service
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.pool import open_reader
from rpisensor.testing import listening_port, send_message, simulated_pins, wait_until
from tests.support import LOOPBACK
from tests.v2_subscriber import subscribe


async def start(reactor, tmp_path, **settings):
    backend = simulated_pins(clock=reactor)
    reader, pool = open_reader(reactor, backend, [DEFAULT_INPUT])
    path = tmp_path / "journal.sqlite"
    publishing = open_publishing(reactor, reader, path, PublishSettings("pi-loopback", **settings))
    service = build_server_service(reactor, reader, pool, ListenSettings((LOOPBACK,)), publishing=publishing)
    service.startService()
    port = (await listening_port(service)).getHost().port
    return service, backend, publishing, path, port


def journal_rows(path) -> list[tuple[int, str, int]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT seq, sensor, value FROM entries ORDER BY seq").fetchall()


@pytest_twisted.ensureDeferred
async def test_every_change_in_order_across_a_reconnect(reactor, tmp_path):
    """What one subscriber received over two connections is the journal file: every entry once, in order."""
    service, backend, publishing, path, port = await start(reactor, tmp_path, window=8, poll_interval=0.01)
    pin = DEFAULT_INPUT.pin
    toggling = LoopingCall(lambda: backend.set_level(pin, not backend.level(pin)))
    toggling.clock = reactor
    toggling.start(0.02)
    try:
        first = await subscribe(reactor, port, 0)
        await wait_until(lambda: len(first.live()) >= 15, reactor)
        first.transport.loseConnection()
        await first.lost
        resume_after = first.high
        await wait_until(lambda: publishing.journal.journal.last >= resume_after + 15, reactor)
        second = await subscribe(reactor, port, resume_after)
        await wait_until(lambda: len(second.live()) >= 20, reactor)
    finally:
        toggling.stop()
    journal = publishing.journal.journal
    # Once the pin is still and its level recorded, nothing more comes: wait until the subscriber has all.
    await wait_until(
        lambda: journal.last and second.high == journal.last
        and second.live()[-1][2] == int(backend.level(pin) != DEFAULT_INPUT.active_low),
        reactor,
    )
    second.transport.loseConnection()
    await second.lost
    await service.stopService()
    received = first.live() + second.live()
    assert first.errors == second.errors == []
    assert received == journal_rows(path)
    assert [seq for seq, _, _ in received] == list(range(1, len(received) + 1))
    assert len(received) >= 35


@pytest_twisted.ensureDeferred
async def test_sim_press_reaches_a_subscription(reactor, tmp_path):
    """'sim button press' and 'release' from another connection show up in a fresh subscription."""
    service, backend, publishing, path, port = await start(reactor, tmp_path, poll_interval=0.01)
    try:
        await wait_until(lambda: publishing.journal.journal.last >= 1, reactor)  # the first sample
        subscriber = await subscribe(reactor, port, None)
        await wait_until(lambda: subscriber.entries, reactor)
        [snapshot] = subscriber.entries
        assert (snapshot.sensor, snapshot.value, snapshot.snapshot) == ("button", 0, True)
        assert await send_message(port, "sim button press", reactor) == "Button pressed"
        await wait_until(lambda: len(subscriber.live()) >= 1, reactor)
        assert await send_message(port, "sim button release", reactor) == "Button released"
        await wait_until(lambda: len(subscriber.live()) >= 2, reactor)
        texts = [(e.value, e.text) for e in subscriber.entries[1:]]
        assert texts == [(1, "Button pressed"), (0, "Button released")]
        assert subscriber.welcome.device == "pi-loopback"
        subscriber.transport.loseConnection()
        await subscriber.lost
    finally:
        await service.stopService()
