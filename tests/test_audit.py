"""
C{rpisensor audit} on an SQLite store written by the real store: a clean
store exits 0; a deleted reading is a hole (exit 1) unless a gap record
covers it; a reading stored twice is a duplicate; what cannot be read exits 2.
The PostgreSQL store's audit is in tests/test_store_postgresql.py.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from rpisensor.store import SQLiteFile
from rpisensor.entries import Gap, Reading

DEVICE, STREAM, PEER, RECEIVED = "pi-lab", "8f3a1c2e9b7d4a60", "192.168.0.17:40000", "2026-12-01T19:33:26.000Z"


def audit(store) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpisensor.app.cli", "audit", str(store)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def reading(seq: int, stream: str = STREAM) -> Reading:
    return Reading(sensor="button", value=seq % 2, text=f"reading {seq}", ts="2026-12-01T19:33:25.123Z",
                   synced=True, stream=stream, seq=seq, device=DEVICE, peer=PEER, received=RECEIVED)


def store(path, records) -> None:
    file = SQLiteFile(path)
    file.open()
    file.write(records)
    file.close()


def test_a_whole_store_passes(tmp_path):
    path = tmp_path / "readings.sqlite"
    lost = Gap(stream=STREAM, first=6, last=9, reason="the outbox was full", device=DEVICE, peer=PEER,
               received=RECEIVED)
    store(path, [reading(n) for n in range(1, 6)] + [lost, reading(10), reading(1, "0000000000000001")])
    done = audit(path)
    assert done.returncode == 0, done.stderr
    assert "2 streams: no holes, no duplicates." in done.stdout
    [row] = [line for line in done.stdout.splitlines() if STREAM in line]
    assert row.split() == [DEVICE, STREAM, "6", "1-10", "1", "(4)", "0", "none"]


def test_holes_and_duplicates_fail(tmp_path):
    path = tmp_path / "readings.sqlite"
    store(path, [reading(n) for n in range(1, 11)])
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM readings WHERE seq IN (4, 7, 8)")
        db.execute("DROP INDEX readings_stream")  # (what would let a reading in twice)
        db.execute("INSERT INTO readings (time, peer, message, device, stream, seq) SELECT time, peer, message,"
                   " device, stream, seq FROM readings WHERE seq = 2")  # fmt: skip
    done = audit(path)
    assert done.returncode == 1
    [row] = [line for line in done.stdout.splitlines() if STREAM in line]
    assert row.split()[-3:] == ["1", "4,", "7-8"]
    assert "HOLES in 1 of 1 streams" in done.stdout
    assert "DUPLICATES in 1 of 1 streams" in done.stdout


def test_what_cannot_be_read(tmp_path):
    done = audit(tmp_path / "absent.sqlite")
    assert done.returncode == 2 and "no such file" in done.stderr
    done = audit(tmp_path / "x.jsonl")
    assert done.returncode == 2 and "the audit reads SQLite stores" in done.stderr
    (tmp_path / "not.sqlite").write_text("not a database")
    done = audit(tmp_path / "not.sqlite")
    assert done.returncode == 2 and "cannot read the store" in done.stderr
