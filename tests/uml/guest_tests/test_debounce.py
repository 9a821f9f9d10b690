"""
The kernel's debounce (gpiolib's, in software: gpio-sim has none of its own): a line must
hold a new level for the whole period before its edge is reported. Bounces shorter than the
period are suppressed, a stable change is reported once.

Each change is at least 6 ms after the previous one (so the kernel sees each one: gpio-sim
delivers on the next 1 ms tick). A bounce must also be shorter than the period; a host that
stalls the guest longer than that between two writes spoils the stimulus, which is then
detected from the write times and tried again, never taken as a result.
"""

import time
from datetime import timedelta

import gpiod
import pytest
from edges import describe, kinds, read_until
from gpiod.line import Direction, Edge

PERIOD_MS = 100
LINE = 23
TRIES = 3


def settings(debounce_ms: int = PERIOD_MS) -> gpiod.LineSettings:
    return gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.BOTH,
                              debounce_period=timedelta(milliseconds=debounce_ms))


def bounce(header, levels) -> bool:
    """
    Write C{levels} to the line, each at least 6 ms after the previous one.

    @return: whether every change came well within the debounce period of the one before,
        which the stimulus needs (half the period: the kernel also sees each change up to a
        tick late).
    """
    times = []
    for level in levels:
        if times:
            time.sleep(0.006)
        times.append(header.pull(LINE, level))
    times.append(time.monotonic_ns())
    return all(b - a < PERIOD_MS * 1_000_000 / 2 for a, b in zip(times, times[1:]))


def with_valid_stimulus(header, levels, then):
    """
    Request the line with debounce, bounce it through C{levels}, and return C{then(request,
    written_at)}; a spoiled stimulus is tried again on a fresh request (which starts from the
    line's current level and drops what the old one had pending).
    """
    for _ in range(TRIES):
        header.pull(LINE, False)
        with gpiod.request_lines(header.path, consumer="guest-test", config={LINE: settings()}) as request:
            if bounce(header, levels):
                return then(request)
    pytest.fail(f"the guest was stalled longer than {PERIOD_MS / 2} ms between two writes in {TRIES} tries")


def test_the_line_reports_its_debounce_period(header):
    with gpiod.request_lines(header.path, consumer="guest-test", config={LINE: settings()}):
        with gpiod.Chip(header.path) as chip:
            assert chip.get_line_info(LINE).debounce_period == timedelta(milliseconds=PERIOD_MS)


def test_without_debounce_the_same_bounce_shows_every_change(header):
    """The control: the stimulus the other tests use does bounce, as the kernel sees it."""
    with gpiod.request_lines(header.path, consumer="guest-test", config={LINE: settings(0)}) as request:
        bounce(header, [True, False, True, False, True])
        events = read_until(request, lambda events: len(events) >= 5)
    assert kinds(events) == "RFRFR"


def test_a_bouncing_change_is_reported_once(header):
    def check(request):
        rising = read_until(request, lambda events: len(events) >= 1)
        # The witness: a later stable change; anything the bounce left would come before it.
        header.pull(LINE, False)
        return rising + read_until(request, lambda events: len(events) >= 1)

    events = with_valid_stimulus(header, [True, False, True, False, True], check)
    assert kinds(events) == "RF", describe(events)


def test_a_glitch_shorter_than_the_period_is_suppressed(header):
    def check(request):
        # Longer than the period: the kernel has decided about the glitch by then (a sleep
        # can only be longer than asked, so this cannot come too early).
        time.sleep(2 * PERIOD_MS / 1000)
        stable_at = header.pull(LINE, True)
        events = read_until(request, lambda events: len(events) >= 1)
        header.pull(LINE, False)
        return stable_at, events + read_until(request, lambda events: len(events) >= 1)

    stable_at, events = with_valid_stimulus(header, [True, False], check)
    assert kinds(events) == "RF", describe(events)
    assert events[0].timestamp_ns > stable_at, "the rising edge is the stable change's, not the glitch's"


def test_a_line_held_through_the_period_reports_both_edges(header):
    with gpiod.request_lines(header.path, consumer="guest-test", config={LINE: settings()}) as request:
        header.pull(LINE, True)
        events = read_until(request, lambda events: len(events) >= 1)
        header.pull(LINE, False)
        events += read_until(request, lambda events: len(events) >= 1)
    assert kinds(events) == "RF"
    assert [event.line_seqno for event in events] == [1, 2]
