"""
C{rpisensor audit STORE}: per stream of an SQLite or PostgreSQL store, the
range of seqs stored, the gap records, the holes no gap record explains and
the seqs stored more than once (which exactly once makes impossible: the
audit shows it). Exit status 0 when there are neither holes nor duplicates,
1 when there are, 2 for a usage error or a store that cannot be read.

The queries are plain SQL that both SQLite (3.25 and newer: window
functions) and PostgreSQL run.

Blocking: a command of its own, not part of a running role.
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from twisted.python import usage

#: Per stream: readings, lowest and highest seq, and seqs stored more than once.
READINGS = (
    "SELECT device, stream, count(*), min(seq), max(seq), count(*) - count(DISTINCT seq)"
    " FROM readings WHERE seq IS NOT NULL GROUP BY device, stream"
)
#: Per stream, the gap records and how many seqs they cover.
GAPS = (
    "SELECT device, stream, count(*), coalesce(sum(to_seq - from_seq + 1), 0), min(from_seq), max(to_seq)"
    " FROM gaps GROUP BY device, stream"
)
#: Per stream, the runs of seqs that readings and gaps cover, each a stretch
#: with nothing missing inside ("gaps and islands": a run starts where an
#: entry begins past everything before it reaches).
RUNS = """
    WITH entries AS (
        SELECT DISTINCT device, stream, seq AS first, seq AS last FROM readings WHERE seq IS NOT NULL
        UNION ALL
        SELECT device, stream, from_seq, to_seq FROM gaps
    ), ordered AS (
        SELECT device, stream, first, last,
               max(last) OVER (PARTITION BY device, stream ORDER BY first, last
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
        FROM entries
    ), numbered AS (
        SELECT device, stream, first, last,
               sum(CASE WHEN reach IS NULL OR first > reach + 1 THEN 1 ELSE 0 END)
                   OVER (PARTITION BY device, stream ORDER BY first, last
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run
        FROM ordered
    )
    SELECT device, stream, min(first), max(last) FROM numbered
    GROUP BY device, stream, run ORDER BY device, stream, min(first)
"""
#: (PostgreSQL) each stream's watermark: everything up to it must be there.
WATERMARKS = "SELECT device, stream, stored FROM streams"


@dataclass
class StreamAudit:
    """
    One stream as the store holds it.

    @ivar first: the lowest seq stored (a reading or the start of a gap).
    @ivar last: the highest.
    @ivar holes: runs of seqs inside C{first}..C{last} (or up to a PostgreSQL
        stream's watermark) that neither a reading nor a gap record covers.
    @ivar duplicates: readings beyond the first of their seq.
    """

    device: str
    stream: str
    readings: int = 0
    gap_records: int = 0
    gap_seqs: int = 0
    first: int | None = None
    last: int | None = None
    duplicates: int = 0
    holes: list[tuple[int, int]] | None = None


def audit(cursor, watermarks: bool = False) -> list[StreamAudit]:
    """The audit of every stream, through a DB-API C{cursor} (SQLite or PostgreSQL)."""
    streams: dict[tuple[str, str], StreamAudit] = {}

    def entry(device: str, stream: str) -> StreamAudit:
        return streams.setdefault((device, stream), StreamAudit(device, stream, holes=[]))

    def widen(a: StreamAudit, first: int, last: int) -> None:
        a.first = first if a.first is None else min(a.first, first)
        a.last = last if a.last is None else max(a.last, last)

    cursor.execute(READINGS)
    for device, stream, count, first, last, duplicates in cursor.fetchall():
        a = entry(device, stream)
        a.readings, a.duplicates = count, duplicates
        widen(a, first, last)
    cursor.execute(GAPS)
    for device, stream, count, seqs, first, last in cursor.fetchall():
        a = entry(device, stream)
        a.gap_records, a.gap_seqs = count, seqs
        widen(a, first, last)
    cursor.execute(RUNS)
    reached: dict[tuple[str, str], int] = {}
    for device, stream, first, last in cursor.fetchall():
        key = (device, stream)
        if key in reached:
            streams[key].holes.append((reached[key] + 1, first - 1))
        reached[key] = last
    if watermarks:
        cursor.execute(WATERMARKS)
        for device, stream, stored in cursor.fetchall():
            a = entry(device, stream)
            end = reached.get((device, stream), 0)
            if stored > end:  # the watermark says stored, but the rows are not there
                a.holes.append((end + 1, stored))
    return [streams[key] for key in sorted(streams)]


def render(audits: list[StreamAudit]) -> str:
    """The audit as a table, one stream a row, then a verdict."""
    header = ("device", "stream", "readings", "seqs", "gap records (seqs)", "duplicates", "holes")
    rows = [header]
    for a in audits:
        seqs = f"{a.first}-{a.last}" if a.first is not None else "-"
        holes = ", ".join(f"{f}-{t}" if f != t else str(f) for f, t in a.holes) or "none"
        rows.append((a.device, a.stream, str(a.readings), seqs, f"{a.gap_records} ({a.gap_seqs})",
                     str(a.duplicates), holes))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    holed = [a for a in audits if a.holes]
    doubled = [a for a in audits if a.duplicates]
    if not audits:
        lines.append("No streams in this store.")
    elif not holed and not doubled:
        lines.append(f"{len(audits)} streams: no holes, no duplicates.")
    else:
        if holed:
            lines.append(f"HOLES in {len(holed)} of {len(audits)} streams: seqs neither stored nor in a gap record.")
        if doubled:
            lines.append(f"DUPLICATES in {len(doubled)} of {len(audits)} streams: readings stored more than once.")
    return "\n".join(lines)


class AuditOptions(usage.Options):
    synopsis = "STORE"
    longdesc = (
        "Check a collector's store: per stream the seqs stored, the gap records, the holes that "
        "no gap record explains, and readings stored more than once. STORE is an SQLite file "
        "(.sqlite, .db) or postgresql://USER@HOST/DB (the password from ~/.pgpass, PGPASSFILE "
        "or ?passfile=PATH). Exit status: 0 all well, 1 holes or duplicates, 2 the store "
        "cannot be read."
    )

    def parseArgs(self, store: str) -> None:
        self["store"] = store

    def postOptions(self) -> None:
        from rpisensor.store.files import store_file_for

        store = self["store"]
        if store.lower().startswith(("postgresql://", "postgres://")):
            try:
                store_file_for(store)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        elif Path(store).suffix.lower() not in (".sqlite", ".db"):
            raise usage.UsageError(
                f"{store!r}: the audit reads SQLite stores (.sqlite, .db) and PostgreSQL ones "
                "(postgresql://USER@HOST/DB)"
            )
        elif not Path(store).is_file():
            raise usage.UsageError(f"{store!r}: no such file")


def run_audit(options) -> int:
    """Audit the store; print the table; the exit status."""
    store = options["store"]
    try:
        if store.lower().startswith(("postgresql://", "postgres://")):
            from rpisensor.store.files import store_file_for

            with store_file_for(store).connect() as connection:
                audits = audit(connection.cursor(), watermarks=True)
        else:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
                audits = audit(connection.cursor())
    except Exception as e:  # sqlite3.Error, psycopg.Error: the store's own words
        print(f"rpisensor audit: cannot read the store {store}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(render(audits))
    return 1 if any(a.holes or a.duplicates for a in audits) else 0
