"""
An overflowed kernel event buffer: the kernel keeps C{event_buffer_size} events per request
and drops the oldest when more come before they are read. The loss shows only as a gap in
C{line_seqno} (and in C{global_seqno}), which is what the gpiod backend reports as lost events.
"""

import time

import gpiod
from edges import describe, read_until
from gpiod.line import Direction, Edge

BOTH = gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.BOTH)
BUFFER = 4
CHANGES = 12
FLIPPED, MARKER = 5, 6


def test_more_edges_than_the_buffer_show_as_a_gap_in_line_seqno(header):
    with gpiod.request_lines(header.path, consumer="guest-test", config={(FLIPPED, MARKER): BOTH},
                             event_buffer_size=BUFFER) as request:
        # Nothing is read while the changes come, each 6 ms after the previous one (so the
        # kernel sees each: gpio-sim delivers on the next 1 ms tick).
        for count in range(CHANGES):
            header.pull(FLIPPED, count % 2 == 0)
            time.sleep(0.006)
        # Then one change on the other line: its event is the newest, so it is kept.
        header.pull(MARKER, True)
        events = read_until(request, lambda events: any(event.line_offset == MARKER for event in events))
    flipped = [event.line_seqno for event in events if event.line_offset == FLIPPED]
    assert flipped == list(range(flipped[0], CHANGES + 1)), describe(events)
    assert flipped[0] > 1, f"no gap: {describe(events)}"
    assert len(flipped) <= BUFFER
    lost = flipped[0] - 1
    assert lost == CHANGES - len(flipped) >= CHANGES - BUFFER
    marker = [event for event in events if event.line_offset == MARKER]
    assert [(event.line_seqno, event.global_seqno) for event in marker] == [(1, CHANGES + 1)]


def test_edges_read_as_they_come_lose_nothing(header):
    """The control: with the same small buffer, reading each event in time loses none."""
    with gpiod.request_lines(header.path, consumer="guest-test", config={FLIPPED: BOTH},
                             event_buffer_size=BUFFER) as request:
        events = []
        for count in range(CHANGES):
            header.pull(FLIPPED, count % 2 == 0)
            events += read_until(request, lambda new: len(new) >= 1)
    assert [event.line_seqno for event in events] == list(range(1, CHANGES + 1))
