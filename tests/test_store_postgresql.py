"""
The PostgreSQL store against a real PostgreSQL server (tests/postgres.py:
initdb into a temporary directory, the server run by the test): the schema,
exactly once by the streams' watermarks (replays, two stores writing one
stream at once), batches held and not acknowledged while the server restarts,
is killed, refuses INSERT or is read-only, the watermark asked at each hello
by collectors sharing one database, and the password kept off the command line.

Every wait is for a condition (30 s deadline); nothing asserts a duration.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.logger import globalLogPublisher
from twisted.python import usage

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import build_collect_service
from rpisensor.roles.collect.options import CollectOptions
from rpisensor.store import StoreOpenError, store_file_for, store_service
from rpisensor.store.postgresql import StreamBehind
from rpisensor.entries import Gap, Reading
from rpisensor.testing import wait_until
from tests import postgres

DEVICE = "pi-greenhouse"
STREAM = "8f3a1c2e9b7d4a60"
PEER = "192.168.0.17:40000"
RECEIVED = "2026-12-01T19:33:26.000Z"

_names = itertools.count(1)


@pytest.fixture(scope="module")
def server():
    postgres.skip_or_fail(pytest)
    server = postgres.PostgresServer(fsync=False)
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def db(server):
    """A database of its own, owned by a login role (not a superuser) of its own; its URL."""
    name = f"fleet{next(_names)}_{os.getpid()}"
    url = server.create(name, name)
    return Database(server, name, url)


class Database:
    def __init__(self, server, name: str, url: str) -> None:
        self.server, self.name, self.url = server, name, url

    def sql(self, text: str) -> str:
        return self.server.psql(text, self.name)

    def rows(self, text: str) -> list[list[str]]:
        out = self.sql(text)
        return [line.split("|") for line in out.splitlines()] if out else []

    def seqs(self, device: str = DEVICE, stream: str = STREAM) -> list[int]:
        return [int(r[0]) for r in self.rows(
            f"SELECT seq FROM readings WHERE device = '{device}' AND stream = '{stream}' ORDER BY seq, ts"
        )]  # fmt: skip

    def stored(self, device: str = DEVICE, stream: str = STREAM) -> int:
        return int(self.sql(f"SELECT stored FROM streams WHERE device = '{device}' AND stream = '{stream}'"))


def reading(seq: int, device: str = DEVICE, stream: str = STREAM) -> Reading:
    ts = f"2026-12-01T19:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1000:03d}Z"
    return Reading(sensor="button", value=seq % 2, text=f"reading {seq}", unit="kPa" if seq % 3 else None, ts=ts,
                   synced=True, stream=stream, seq=seq, digest=f"{seq:016x}", device=device, peer=PEER,
                   received=RECEIVED)  # fmt: skip


def readings(first: int, last: int, **key) -> list[Reading]:
    return [reading(seq, **key) for seq in range(first, last + 1)]


def gap(first: int, last: int) -> Gap:
    return Gap(stream=STREAM, first=first, last=last, reason="the outbox was full", digest=f"{last:016x}",
               device=DEVICE, peer=PEER, received=RECEIVED)  # fmt: skip


def opened(reactor, url: str, timescale: bool = False):
    service = store_service(reactor, url, timescale)
    service.startService()
    return service


class Lines:
    """The log's lines while it is in a C{with}."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __enter__(self) -> Lines:
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *_) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def say(self, text: str) -> bool:
        return any(text in str(e.get("log_format", "")) for e in self.events)


@pytest_twisted.ensureDeferred
async def test_stored_once_with_the_pis_timestamp(reactor, db):
    """
    Readings, a gap and a v1 message go in; a replay of the same entries (and
    one more) stores only the new one; the watermark, the device and the Pi's
    own timestamps are there; a store opened later starts from the watermark.
    """
    store = opened(reactor, db.url)
    try:
        await store.append_many(readings(1, 5) + [gap(6, 8), reading(9)])
        await store.append_many(readings(3, 5) + [gap(6, 8)] + readings(9, 10))
        assert db.seqs() == [1, 2, 3, 4, 5, 9, 10]
        assert db.rows("SELECT from_seq, to_seq, reason FROM gaps") == [["6", "8", "the outbox was full"]]
        assert db.stored() == 10
        assert db.rows("SELECT device FROM devices") == [[DEVICE]]
        # ts is the Pi's, to the millisecond, not when the collector received it
        assert db.sql(
            "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS') FROM readings WHERE seq = 9"
        ) == "2026-12-01T19:00:09.009"
        assert db.rows("SELECT value, unit, text FROM readings WHERE seq = 4") == [["0", "kPa", "reading 4"]]
        assert await store.position(DEVICE, STREAM) == 10
        assert await store.position(DEVICE, "0000000000000000") == 0
        # the entry covering a seq, for the log-matching check on resume: its span and digest
        assert await store.entry(DEVICE, STREAM, 4) == (4, 4, f"{4:016x}")
        assert await store.entry(DEVICE, STREAM, 7) == (6, 8, f"{8:016x}")
        assert await store.entry(DEVICE, STREAM, 11) is None
    finally:
        await store.stopService()
    again = opened(reactor, db.url)
    try:
        assert again.high_waters() == {(DEVICE, STREAM): 10}
    finally:
        await again.stopService()


@pytest_twisted.ensureDeferred
async def test_two_stores_writing_one_stream_at_once_store_each_reading_once(reactor, db):
    """
    Two collectors' stores take overlapping runs of one stream at once, each from where
    the database stood (a reporter that failed over while its old connection was still
    being written): each reading once, in order.
    """
    one, two = opened(reactor, db.url), opened(reactor, db.url)
    try:
        start = 1
        for shorter in range(10):
            await gatherResults([
                one.append_many(readings(start, start + 59 - 10 * (shorter % 2))),
                two.append_many(readings(start, start + 49 + 20 * (shorter % 2))),
            ])  # fmt: skip
            start = db.stored() + 1
        assert db.seqs() == list(range(1, start))
        assert start == 1 + 5 * (60 + 70)
    finally:
        await gatherResults([one.stopService(), two.stopService()])


BROKER = "mqtt://broker.lan:1883"


def through_broker(entries: list) -> list:
    """The same entries as a collector takes them from an MQTT broker (their peer is the broker)."""
    for entry in entries:
        entry.peer = BROKER
    return entries


@pytest_twisted.ensureDeferred
async def test_entries_through_a_broker_in_any_order_are_stored_once(reactor, db):
    """
    A shared subscription deals one stream's messages to two collectors in turn, and QoS 1
    repeats some: entries 1-300, each once or more, shuffled (seeded), in batches taken by
    two stores at once. Each entry is stored where it falls (ahead of the watermark when its
    predecessor is not there yet), once; the watermark ends at 300 with nothing ahead, and
    the audit finds no hole and no duplicate.
    """
    import random

    one, two = opened(reactor, db.url), opened(reactor, db.url)
    try:
        for seed in range(3):
            stream = f"{seed:016x}"
            rng = random.Random(seed)
            seqs = list(range(1, 301)) + rng.sample(range(1, 301), 60)
            rng.shuffle(seqs)
            seen = []
            for start in range(0, len(seqs), 24):
                batch = seqs[start : start + 24]
                half = rng.randrange(len(batch) + 1)
                await gatherResults([
                    one.append_many(through_broker([reading(n, stream=stream) for n in batch[:half]])),
                    two.append_many(through_broker([reading(n, stream=stream) for n in batch[half:]])),
                ])  # fmt: skip
                seen += batch
                expected = next(n for n in range(1, 302) if n not in seen) - 1
                assert db.stored(stream=stream) == expected
            assert db.seqs(stream=stream) == list(range(1, 301))
            assert db.rows(f"SELECT stored, ahead FROM streams WHERE stream = '{stream}'") == [["300", "0"]]
        done = subprocess.run([sys.executable, "-m", "rpisensor.app.cli", "audit", db.url], capture_output=True,
                              text=True)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        await gatherResults([one.stopService(), two.stopService()])


@pytest_twisted.ensureDeferred
async def test_gaps_and_readings_ahead_of_the_watermark(reactor, db):
    """
    Through a broker: a gap and readings that come before what they follow wait above the
    watermark (streams.ahead says how far); once the first entries come, the watermark moves
    over all of it. A reading of rpisensor's own protocol then skips what is stored already.
    """
    store = opened(reactor, db.url)
    try:
        await store.append_many(through_broker([gap(6, 8), reading(10), reading(5)]))
        assert db.rows(f"SELECT stored, ahead FROM streams WHERE stream = '{STREAM}'") == [["0", "10"]]
        await store.append_many(through_broker([gap(6, 8), reading(2)]))  # the gap again: stored once
        await store.append_many(through_broker(readings(3, 4) + [reading(1)]))
        assert db.rows(f"SELECT stored, ahead FROM streams WHERE stream = '{STREAM}'") == [["8", "10"]]
        await store.append_many(readings(9, 12))  # in order, from a reporter: 10 is there already
        assert db.rows(f"SELECT stored, ahead FROM streams WHERE stream = '{STREAM}'") == [["12", "0"]]
        assert db.seqs() == [1, 2, 3, 4, 5, 9, 10, 11, 12]
        assert db.rows("SELECT from_seq, to_seq FROM gaps") == [["6", "8"]]
        with pytest.raises(StreamBehind, match="entries 13 to 14 are not there"):
            await store.append_many(readings(15, 16))
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_a_batch_that_would_leave_a_hole_is_refused(reactor, db):
    """Entries that do not follow the database's watermark are refused, saying why; nothing is written."""
    store = opened(reactor, db.url)
    try:
        await store.append_many(readings(1, 5))
        with pytest.raises(StreamBehind, match="entries 6 to 7 are not there"):
            await store.append_many(readings(8, 9))
        assert db.seqs() == [1, 2, 3, 4, 5]
        assert db.stored() == 5
    finally:
        await store.stopService()


async def held_then_stored(reactor, db, store, lines: Lines, first: int, last: int):
    """Entries appended now are held (the log says so, nothing is stored); the Deferred to await."""
    written = store.append_many(readings(first, last))
    await wait_until(lambda: lines.say("does not take writes now"), reactor)
    assert not written.called
    return written


@pytest_twisted.ensureDeferred
async def test_held_while_postgresql_restarts(reactor, db):
    """PostgreSQL stops (fast shutdown) and starts again: the batch is held, then stored once."""
    store = opened(reactor, db.url)
    try:
        await store.append_many(readings(1, 5))
        with Lines() as lines:
            db.server.stop("fast")
            try:
                written = await held_then_stored(reactor, db, store, lines, 6, 10)
            finally:
                db.server.start()
            await written
            assert lines.say("takes writes again")
        assert db.seqs() == list(range(1, 11))
        assert await store.position(DEVICE, STREAM) == 10  # the lookups' connection is back too
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_held_while_postgresql_is_killed(reactor, db):
    """PostgreSQL is SIGKILLed and restarted (crash recovery): nothing held is lost or doubled."""
    store = opened(reactor, db.url)
    try:
        await store.append_many(readings(1, 5))
        with Lines() as lines:
            db.server.kill()
            try:
                written = await held_then_stored(reactor, db, store, lines, 6, 10)
            finally:
                db.server.start()
            await written
        await store.append_many(readings(8, 12))
        assert db.seqs() == list(range(1, 13))
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_held_while_insert_is_revoked(reactor, db):
    """The role may no longer INSERT: nothing is acknowledged, the log says why; the GRANT back resumes."""
    store = opened(reactor, db.url)
    try:
        with Lines() as lines:
            db.sql(f"REVOKE INSERT ON readings FROM {db.name}")
            try:
                written = await held_then_stored(reactor, db, store, lines, 1, 5)
                assert any("permission denied" in str(e.get("error", "")) for e in lines.events)
                assert db.seqs() == []
            finally:
                db.sql(f"GRANT INSERT ON readings TO {db.name}")
            await written
        assert db.seqs() == [1, 2, 3, 4, 5]
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_held_while_the_server_is_read_only(reactor, db):
    """default_transaction_read_only turned on by the server's configuration: held until it is off."""
    store = opened(reactor, db.url)
    try:
        await store.append_many(readings(1, 2))
        with Lines() as lines:
            db.sql("ALTER SYSTEM SET default_transaction_read_only = on; SELECT pg_reload_conf()")
            try:
                written = await held_then_stored(reactor, db, store, lines, 3, 5)
                assert any("read-only transaction" in str(e.get("error", "")) for e in lines.events)
            finally:
                db.sql("ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf()")
            await written
        assert db.seqs() == [1, 2, 3, 4, 5]
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stop_gives_up_a_held_batch(reactor, db):
    """A collector stopping while PostgreSQL is away fails the held batch (not acknowledged) at once."""
    store = opened(reactor, db.url)
    db.server.stop("fast")
    try:
        with Lines() as lines:
            written = await held_then_stored(reactor, db, store, lines, 1, 3)
            failures = []
            written.addErrback(failures.append)
            await store.stopService()
            assert len(failures) == 1  # not acknowledged: the reporter sends it again
            assert not lines.say("did not finish writing")
    finally:
        db.server.start()
    assert db.seqs() == []


def test_a_password_in_the_url_is_refused():
    """A password in the URL would be on the command line (ps): refused, pointing at the password file."""
    with pytest.raises(ValueError, match="pgpass"):
        store_file_for("postgresql://collector:secret@db.example.org/readings")
    with pytest.raises(usage.UsageError, match="PGPASSFILE"):
        CollectOptions().parseOptions(["--store", "postgresql://collector:secret@db.example.org/readings"])
    with pytest.raises(usage.UsageError, match="--timescale is for a PostgreSQL store"):
        CollectOptions().parseOptions(["--store", "x.sqlite", "--timescale"])


@pytest_twisted.ensureDeferred
async def test_the_password_comes_from_a_password_file(reactor, server, tmp_path):
    """A role that needs a password connects with ?passfile=PATH; without it, a one-line start-up error."""
    name = f"pw{next(_names)}_{os.getpid()}"
    server.create(name, name)
    server.psql(f"ALTER ROLE {name} PASSWORD 'correct horse'")
    hba = server.data / "pg_hba.conf"
    rules = hba.read_text()
    try:
        hba.write_text(f"host {name} {name} 127.0.0.1/32 scram-sha-256\n" + rules)
        server.psql("SELECT pg_reload_conf()")
        url = server.url(name, name, tcp=True)
        with pytest.raises(StoreOpenError, match="password"):
            opened(reactor, url)
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{server.port}:{name}:{name}:correct horse\n")
        passfile.chmod(0o600)
        store = opened(reactor, f"{url}?passfile={passfile}")
        try:
            await store.append_many(readings(1, 2))
            assert await store.position(DEVICE, STREAM) == 2
        finally:
            await store.stopService()
    finally:
        hba.write_text(rules)
        server.psql("SELECT pg_reload_conf()")


def test_start_up_errors_are_one_line(reactor, db):
    """No server there, or --timescale without TimescaleDB: the collector does not start, saying why."""
    with pytest.raises(StoreOpenError) as caught:
        opened(reactor, f"postgresql://nobody@127.0.0.1:{postgres.free_port()}/nothing")
    assert "cannot open the store postgresql://nobody@127.0.0.1" in str(caught.value)
    assert "\n" not in str(caught.value)
    if db.sql("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'") == "0":
        with pytest.raises(StoreOpenError, match="TimescaleDB extension is not installed"):
            opened(reactor, db.url, timescale=True)
        assert db.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'readings'") == "0"  # rolled back


# -- collectors sharing one database -------------------------------------------


def collector(reactor, url: str):
    service = build_collect_service(reactor, url, ListenSettings(endpoints=("tcp:0:interface=127.0.0.1",)))
    service.startService()
    return service


async def port_of(service) -> int:
    from rpisensor.net.listening import ListenerService

    [listener] = [s for s in service if isinstance(s, ListenerService)]
    return (await listener.when_listening()).getHost().port


@pytest_twisted.ensureDeferred
async def test_collectors_sharing_a_database_resume_from_it(reactor, db):
    """
    A reporter sends 1-20 to collector A, fails over to B (which started before any of it
    was stored), then goes back to A: each welcome says what the database holds, not what
    that collector remembers; every reading is stored once.
    """
    from tests.v2_link import RawReporter

    a, b = collector(reactor, db.url), collector(reactor, db.url)
    try:
        port_a, port_b = await port_of(a), await port_of(b)
        first = await RawReporter.connect(reactor, port_a, DEVICE, STREAM)
        assert first.welcome == 0
        first.send(readings(1, 20))
        await wait_until(lambda: first.acked == 20, reactor)
        first.close()
        second = await RawReporter.connect(reactor, port_b, DEVICE, STREAM)
        assert second.welcome == 20
        second.send(readings(21, 30))
        await wait_until(lambda: second.acked == 30, reactor)
        second.close()
        third = await RawReporter.connect(reactor, port_a, DEVICE, STREAM)
        assert third.welcome == 30
        third.close()
        assert db.seqs() == list(range(1, 31))
    finally:
        await gatherResults([a.stopService(), b.stopService()])


@pytest_twisted.ensureDeferred
async def test_a_reporter_fails_over_between_collectors_sharing_a_database(reactor, db, tmp_path):
    """
    A real reporter (--connect A --connect B) streams into collector A; A stops mid-stream;
    the reporter goes on with B, which resumes from the database: every reading the
    reporter took is stored once, and what it was told is acknowledged is what is there.
    """
    from rpisensor.roles.report.service import OutboxSettings, ReportSettings, build_report_service
    from rpisensor.sensing.inputs import DEFAULT_INPUT
    from rpisensor.sensing.pool import open_reader
    from rpisensor.testing import simulated_pins

    a, b = collector(reactor, db.url), collector(reactor, db.url)
    endpoints = (f"tcp:host=127.0.0.1:port={await port_of(a)}", f"tcp:host=127.0.0.1:port={await port_of(b)}")
    reader, reads = open_reader(reactor, simulated_pins(clock=reactor), [DEFAULT_INPUT])
    acks: list[int] = []
    settings = ReportSettings(
        endpoints, interval=0.02, max_retry_delay=1.0, outbox=OutboxSettings(str(tmp_path / "outbox.sqlite")),
        device=DEVICE, protocol="2",
    )  # fmt: skip
    report = build_report_service(reactor, reader, reads, settings, on_ack=acks.append)
    report.startService()
    stream = report.outbox.journal.stream
    try:
        await wait_until(lambda: acks and acks[-1] >= 30, reactor)
        await a.stopService()
        moved_at = acks[-1]
        await wait_until(lambda: acks[-1] >= moved_at + 30, reactor)
        await report.stopService()
        taken = report.outbox.journal.last
        await wait_until(lambda: db.stored(stream=stream) >= taken, reactor)
        assert db.seqs(stream=stream) == list(range(1, taken + 1))
        assert acks[-1] <= taken
        peers = {int(p.rsplit(":", 1)[1]) for [p] in db.rows("SELECT DISTINCT peer FROM readings")}
        assert len(peers) >= 2  # (the reporter's connections to A, then to B)
    finally:
        if report.running:
            await report.stopService()
        await gatherResults([s.stopService() for s in (a, b) if s.running])


@pytest_twisted.ensureDeferred
async def test_the_collector_stops_acknowledging_while_writes_are_refused(reactor, db):
    """
    INSERT revoked under a running collector: the reporter's readings are not acknowledged
    and the log says why; once granted again they are stored once and acknowledged,
    on the same connection.
    """
    from tests.v2_link import RawReporter

    a = collector(reactor, db.url)
    try:
        link = await RawReporter.connect(reactor, await port_of(a), DEVICE, STREAM)
        link.send(readings(1, 5))
        await wait_until(lambda: link.acked == 5, reactor)
        with Lines() as lines:
            db.sql(f"REVOKE INSERT ON readings FROM {db.name}")
            try:
                link.send(readings(6, 10))
                await wait_until(lambda: lines.say("does not take writes now"), reactor)
                assert link.acked == 5
            finally:
                db.sql(f"GRANT INSERT ON readings TO {db.name}")
            await wait_until(lambda: link.acked == 10, reactor)
        assert not link.lost.called and link.errors == []
        assert db.seqs() == list(range(1, 11))
        link.close()
    finally:
        await a.stopService()


def test_the_audit_finds_holes_and_duplicates(db):
    """
    rpisensor audit postgresql://...: a whole stream passes (exit 0); a deleted reading,
    a reading stored twice (another ts) and rows missing under the watermark fail it (exit 1).
    """
    import subprocess
    import sys

    def audit() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rpisensor.app.cli", "audit", db.url], capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    from rpisensor.store.postgresql import PostgresStore

    store = PostgresStore(db.url)
    store.open()
    try:
        store.write(readings(1, 5) + [gap(6, 8)] + readings(9, 12) + readings(1, 3, stream="0000000000000001"))
    finally:
        store.close()
    done = audit()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 streams: no holes, no duplicates." in done.stdout
    db.sql("DELETE FROM readings WHERE seq = 10 AND stream = '8f3a1c2e9b7d4a60'")
    db.sql("INSERT INTO readings SELECT device, stream, seq, ts + interval '1 s', synced, sensor, value, unit, text,"
           " peer, received, identity, digest FROM readings WHERE seq = 2 AND stream = '8f3a1c2e9b7d4a60'")  # fmt: skip
    db.sql("DELETE FROM readings WHERE seq = 3 AND stream = '0000000000000001'")
    done = audit()
    assert done.returncode == 1
    rows = {line.split()[1]: line.split() for line in done.stdout.splitlines() if line.startswith(DEVICE)}
    assert rows[STREAM][-2:] == ["1", "10"]
    assert rows["0000000000000001"][-2:] == ["0", "3"]  # (under the watermark, 3)


@pytest_twisted.ensureDeferred
async def test_standing_and_the_first_claim(reactor, db):
    """Where a stream stands (its watermark, the digest through it, its owner); the first claim stands."""
    from rpisensor.store.record import Standing

    store = opened(reactor, db.url)
    try:
        assert await store.standing(DEVICE, STREAM) == Standing()
        await store.append_many(readings(1, 5) + [gap(6, 8)])
        assert await store.standing(DEVICE, STREAM) == Standing(8, f"{8:016x}", None)
        assert await store.claim(DEVICE, STREAM, "owner-one") == "owner-one"
        assert await store.claim(DEVICE, STREAM, "owner-two") == "owner-one"
        assert await store.claim(DEVICE, "0000000000000001", "owner-two") == "owner-two"
        assert (await store.standing(DEVICE, STREAM)).owner == "owner-one"
    finally:
        await store.stopService()
