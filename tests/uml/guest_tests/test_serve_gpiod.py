"""
C{serve --gpio gpiod} on the real kernel GPIO stack: the service as the twistd plugin
builds it (C{twistd rpisensor serve ...}'s options and C{makeService}), on the guest's
reactor, listening on the guest's loopback. As the simulated button's line flips, C{go} and
C{read} answer its new level without a read, and v2 subscribers get each change exactly
once, in order, with the kernel's timestamp.

Each change waits for the previous one's reading, or for 6 ms (gpio-sim delivers a change
on the next 1 ms tick, and merges changes within one tick).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from contextlib import closing

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from rpisensor.app.tap import Options, makeService
from rpisensor.testing import listening_port, send_message, wait_until
from rpisensor.wire import v2
from tests.v2_subscriber import subscribe

#: BOARD pin 24, the tutorial's button (the default input), is line 8 (BCM 8).
BUTTON_LINE = 8


class Serve:
    """C{twistd rpisensor serve --gpio gpiod ...}, built by the plugin, running in this process."""

    def __init__(self, journal, *extra: str) -> None:
        self.journal = journal
        options = Options()
        options.parseOptions([
            "serve", "--gpio", "gpiod", "--listen", "tcp:0:interface=127.0.0.1",
            "--journal", str(journal), "--device", "pi-in-uml", *extra,
        ])  # fmt: skip
        self.top = makeService(options)
        self.role = self.top.role
        self.reader = self.role.factory.reader

    async def start(self) -> int:
        self.top.startService()
        return (await listening_port(self.role)).getHost().port

    def stop(self):
        return self.top.stopService()

    def journal_rows(self) -> list[tuple[int, str, int, str]]:
        with closing(sqlite3.connect(self.journal)) as db:
            return db.execute("SELECT seq, sensor, value, text FROM entries ORDER BY seq").fetchall()


@pytest.fixture
def serve(tmp_path):
    """Builds the service; afterwards stops it if still running, and puts back the signal handlers."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    made = []

    def build(*extra: str) -> Serve:
        made.append(Serve(tmp_path / "journal.sqlite", *extra))
        return made[-1]

    yield build
    for server in made:
        if server.top.running:
            pytest_twisted.blockon(server.stop())
    for number, handler in handlers.items():
        signal.signal(number, handler)


def wall_seconds(text: str) -> float:
    """A frame's timestamp as epoch seconds."""
    return v2.parse_timestamp(text).timestamp()


@pytest_twisted.ensureDeferred
async def test_go_and_subscribers_follow_the_line(header, serve, reactor):
    """
    The default input (BOARD 24, pull-up, active low) on the header chip found by label: each
    flip of its line is one reading to a subscriber resuming from 0 and to a live view, in
    order, once; go and read answer each new level; no read goes to the read pool.
    """
    server = serve()
    port = await server.start()
    assert server.reader.backend.name == "gpiod"
    assert server.reader.backend.chip == header.path
    assert await send_message(port, "go", reactor) == "Button released"  # the pull-up holds it high
    history = await subscribe(reactor, port, 0)
    await wait_until(lambda: len(history.live()) >= 1, reactor)
    view = await subscribe(reactor, port, None)
    await wait_until(lambda: view.entries, reactor)
    assert [(e.sensor, e.value, e.snapshot) for e in view.entries] == [("button", 0, True)]

    flips = 10
    written = []
    for count in range(1, flips + 1):
        pressed = count % 2 == 1
        written.append(time.time())
        header.pull(BUTTON_LINE, not pressed)  # pressed pulls the line low
        await wait_until(lambda: len(history.live()) > count and len(view.live()) >= count, reactor)
        text = "Button pressed" if pressed else "Button released"
        assert await send_message(port, "go", reactor) == text
        assert await send_message(port, "read button", reactor) == text

    assert server.reader.reads == 0, "go, read and the journal needed no read: the kernel's edges tell"
    await server.stop()
    await history.lost
    await view.lost

    expected = [0] + [count % 2 for count in range(1, flips + 1)]
    assert history.errors == view.errors == []
    assert [(e.seq, e.value) for e in history.entries] == list(enumerate(expected, 1))
    assert [(e.seq, e.value) for e in view.entries[1:]] == list(enumerate(expected, 1))[1:]
    assert [(e.seq, e.sensor, e.value, e.text) for e in history.entries] == server.journal_rows()
    # The kernel's timestamp of each edge: after its write (to the frame's millisecond), before it arrived.
    for reading, at in zip(history.entries[1:], written):
        assert at - 0.001 <= wall_seconds(reading.ts) <= time.time()
    assert history.welcome.device == "pi-in-uml"


@pytest_twisted.ensureDeferred
async def test_fast_changes_arrive_each_once_in_order(header, serve, reactor):
    """Changes 6 ms apart, not waiting for each other: the subscriber gets every one, once, in order."""
    server = serve("--numbering", "bcm", "--input", "door=17,pull=down,active=high,on=open,off=closed")
    port = await server.start()
    subscriber = await subscribe(reactor, port, 0)
    await wait_until(lambda: len(subscriber.live()) >= 1, reactor)
    changes = 40
    for count in range(1, changes + 1):
        await deferLater(reactor, 0.006, header.pull, 17, count % 2 == 1)
    await wait_until(lambda: len(subscriber.live()) >= changes + 1, reactor)
    assert await send_message(port, "go", reactor) == "closed"
    assert server.reader.reads == 0
    await server.stop()
    await subscriber.lost
    values = [value for _, _, value in subscriber.live()]
    assert values == [0] + [count % 2 for count in range(1, changes + 1)]
    assert [seq for seq, _, _ in subscriber.live()] == list(range(1, changes + 2))
    assert [(e.seq, e.sensor, e.value, e.text) for e in subscriber.entries] == server.journal_rows()
    stamps = [wall_seconds(e.ts) for e in subscriber.entries[1:]]
    assert stamps == sorted(stamps) and stamps[-1] <= time.time()
