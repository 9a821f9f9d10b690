"""
Kernel edge events (both edges) on a gpio-sim line, read by the Twisted reactor from the
line request's file descriptor through an IReadDescriptor: no thread, no polling.

gpio-sim delivers a change on the next timer tick (1 ms here), and changes within one tick
merge: so each change here waits for the previous one's event, or for 6 ms.
"""

import gpiod
import pytest_twisted
from edges import EdgeReader, kinds
from gpiod.line import Direction, Edge
from twisted.internet.task import deferLater

BOTH = gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.BOTH)


@pytest_twisted.ensureDeferred
async def test_each_change_reaches_the_reactor_as_one_edge(header, reactor):
    with gpiod.request_lines(header.path, consumer="guest-test", config={"GPIO17": BOTH}) as request:
        reader = EdgeReader(request, reactor)
        reader.start()
        try:
            written = []
            for count in range(1, 7):
                written.append(header.pull(17, count % 2 == 1))
                await reader.wait_count(count)
        finally:
            reader.stop()
    events = reader.events
    assert kinds(events) == "RFRFRF"
    assert [event.line_offset for event in events] == [17] * 6
    assert [event.line_seqno for event in events] == [1, 2, 3, 4, 5, 6]
    # Kernel timestamps, on the monotonic clock: each after its own change.
    assert all(event.timestamp_ns > at for event, at in zip(events, written))
    assert [event.timestamp_ns for event in events] == sorted(event.timestamp_ns for event in events)


@pytest_twisted.ensureDeferred
async def test_changes_made_while_the_reactor_runs_arrive_in_order(header, reactor):
    """Changes 6 ms apart, scheduled in the reactor: the events arrive as they come, in order."""
    changes = 12
    with gpiod.request_lines(header.path, consumer="guest-test", config={22: BOTH}) as request:
        reader = EdgeReader(request, reactor)
        reader.start()
        try:
            for count in range(changes):
                # Each change 6 ms after the previous one ran (a timer never fires early).
                await deferLater(reactor, 0.006, header.pull, 22, count % 2 == 0)
            await reader.wait_count(changes)
        finally:
            reader.stop()
    assert kinds(reader.events) == "RF" * (changes // 2)
    assert [event.line_seqno for event in reader.events] == list(range(1, changes + 1))


@pytest_twisted.ensureDeferred
async def test_two_lines_in_one_request_each_report_their_own_edges(header, reactor):
    with gpiod.request_lines(header.path, consumer="guest-test", config={(5, 6): BOTH}) as request:
        reader = EdgeReader(request, reactor)
        reader.start()
        try:
            header.pull(5, True)
            await reader.wait_count(1)
            header.pull(6, True)
            await reader.wait_count(2)
            header.pull(5, False)
            await reader.wait_count(3)
        finally:
            reader.stop()
    assert [(event.line_offset, event.event_type.name[0], event.line_seqno) for event in reader.events] == [
        (5, "R", 1), (6, "R", 1), (5, "F", 2)]
    assert [event.global_seqno for event in reader.events] == [1, 2, 3]
