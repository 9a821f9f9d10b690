"""
All the SQL of the PostgreSQL store (L{rpisensor.store.postgresql}), in one
place: the schema, what a batch writes, and what the collectors ask. (The
audit's queries, which SQLite runs too, are in L{rpisensor.store.audit}.)

The schema (docs/howto/fleets.md shows it too):

  - C{readings}: one row per reading of a stream, keyed by C{(device,
    stream, seq, ts)}. C{ts} is when the Pi took the reading, as it sent it:
    the collector never replaces it, so a reading sent again has the same
    key. (C{ts} is in the key because TimescaleDB needs the time column in
    every unique index of a hypertable.)
  - C{gaps}: entries C{from_seq}..C{to_seq} of a stream that will never
    arrive, and why; keyed by C{(device, stream, from_seq)}.
  - C{streams}: one row per stream, with C{stored}, its watermark: every
    entry up to it is in C{readings} or covered by a C{gaps} row. Each batch
    reads it C{FOR UPDATE} and moves it in the same transaction, so what any
    collector writes for a stream is written once, in order, and a collector
    taking a stream over resumes from it. C{ahead} is the highest seq stored
    above the watermark (0: none): entries that came through an MQTT broker
    before the ones they follow (see L{rpisensor.store.postgresql}).
  - C{devices}: one row per device, when it was first heard from (the
    C{last_seen} of its streams says when last).
  - C{messages}: what plain (v1) reporters send, one row per message.

C{digest} (of readings and gaps) is the stream's hash chain through the
entry (L{rpisensor.stream.chain}), empty for entries sent by older
versions; C{owner} (of streams) is kept for the stream's owner.
"""

from __future__ import annotations

#: The tables and indexes, made when a collector opens the store (each
#: statement is idempotent). Readings are partitioned by time where
#: TimescaleDB makes them a hypertable (L{TIMESCALE}).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS devices (
        device text PRIMARY KEY,
        first_seen timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS streams (
        device text NOT NULL,
        stream text NOT NULL,
        stored bigint NOT NULL DEFAULT 0,
        owner text,
        first_seen timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now(),
        ahead bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (device, stream)
    )""",
    # (A database made before entries could be stored ahead of the watermark.)
    "ALTER TABLE streams ADD COLUMN IF NOT EXISTS ahead bigint NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS readings (
        device text NOT NULL,
        stream text NOT NULL,
        seq bigint NOT NULL,
        ts timestamptz NOT NULL,
        synced boolean NOT NULL,
        sensor text NOT NULL,
        value double precision NOT NULL,
        unit text,
        text text NOT NULL,
        peer text NOT NULL,
        received timestamptz NOT NULL,
        identity text,
        digest text,
        PRIMARY KEY (device, stream, seq, ts)
    )""",
    # What dashboards ask: one sensor of one device over a time range.
    "CREATE INDEX IF NOT EXISTS readings_sensor_ts ON readings (device, sensor, ts)",
    """CREATE TABLE IF NOT EXISTS gaps (
        device text NOT NULL,
        stream text NOT NULL,
        from_seq bigint NOT NULL,
        to_seq bigint NOT NULL,
        reason text NOT NULL,
        peer text NOT NULL,
        received timestamptz NOT NULL,
        identity text,
        digest text,
        PRIMARY KEY (device, stream, from_seq)
    )""",
    """CREATE TABLE IF NOT EXISTS messages (
        id bigserial PRIMARY KEY,
        time timestamptz NOT NULL,
        peer text NOT NULL,
        message text NOT NULL
    )""",
)

#: Two collectors opening a new database at once must not both make the tables.
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('rpisensor schema'))"

#: Makes C{readings} a TimescaleDB hypertable on C{ts} (C{--timescale}).
TIMESCALE = (
    "CREATE EXTENSION IF NOT EXISTS timescaledb",
    "SELECT create_hypertable('readings', 'ts', if_not_exists => TRUE, migrate_data => TRUE)",
)

#: Whether TimescaleDB can be installed in this server.
TIMESCALE_AVAILABLE = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"

# -- one batch, in one transaction ------------------------------------------

#: The streams of the batch, locked until the commit, with their watermarks;
#: a stream seen for the first time gets its row (watermark 0). In key
#: order, so that two collectors never wait for each other in a circle.
LOCK_STREAMS = (
    "INSERT INTO streams AS s (device, stream) SELECT * FROM unnest(%s::text[], %s::text[])"
    " ORDER BY 1, 2 ON CONFLICT (device, stream) DO UPDATE SET last_seen = now()"
    " RETURNING s.device, s.stream, s.stored, s.ahead"
)
#: The readings above the watermarks, by COPY (binary), the fastest way in.
COPY_READINGS = (
    "COPY readings (device, stream, seq, ts, synced, sensor, value, unit, text, peer, received,"
    " identity, digest) FROM STDIN (FORMAT BINARY)"
)
#: The types of L{COPY_READINGS}' columns, for a binary COPY.
READING_TYPES = (
    "text", "text", "int8", "timestamptz", "bool", "text", "float8", "text", "text", "text",
    "timestamptz", "text", "text",
)  # fmt: skip
INSERT_GAPS = (
    "INSERT INTO gaps (device, stream, from_seq, to_seq, reason, peer, received, identity, digest)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
#: The new watermarks, and what is stored above them.
MOVE_STREAMS = (
    "UPDATE streams s SET stored = b.stored, ahead = b.ahead"
    " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[]) AS b (device, stream, stored, ahead)"
    " WHERE s.device = b.device AND s.stream = b.stream"
)
#: The entries of a stream stored above its watermark (first and last seq of each).
AHEAD = (
    "SELECT seq, seq FROM readings WHERE device = %(device)s AND stream = %(stream)s AND seq > %(after)s"
    " UNION SELECT from_seq, to_seq FROM gaps WHERE device = %(device)s AND stream = %(stream)s"
    " AND to_seq > %(after)s"
)
#: Devices seen for the first time (once per device and connection to the database).
NEW_DEVICES = "INSERT INTO devices (device) SELECT * FROM unnest(%s::text[]) ON CONFLICT DO NOTHING"
INSERT_MESSAGES = "INSERT INTO messages (time, peer, message) VALUES (%s, %s, %s)"

# -- what collectors ask ---------------------------------------------------

#: Every stream's watermark (a collector's registry at start).
WATERMARKS = "SELECT device, stream, stored FROM streams"
#: One stream's watermark (a collector asks at each hello: another may have moved it).
WATERMARK = "SELECT stored FROM streams WHERE device = %s AND stream = %s"
#: One stream's watermark and owner.
STANDING = "SELECT stored, owner FROM streams WHERE device = %s AND stream = %s"
#: A stream's owner, recorded by the first sender that claims it; the one it has is kept.
CLAIM = (
    "INSERT INTO streams AS s (device, stream, owner) VALUES (%s, %s, %s)"
    " ON CONFLICT (device, stream) DO UPDATE SET owner = COALESCE(s.owner, EXCLUDED.owner)"
    " RETURNING s.owner"
)
#: The entry of a stream covering seq N: a reading, or the gap over it; its span and digest.
ENTRY = (
    "SELECT seq, seq, digest FROM readings WHERE device = %(device)s AND stream = %(stream)s"
    " AND seq = %(seq)s"
    " UNION ALL SELECT from_seq, to_seq, digest FROM gaps WHERE device = %(device)s"
    " AND stream = %(stream)s AND from_seq <= %(seq)s AND to_seq >= %(seq)s"
    " LIMIT 1"
)
