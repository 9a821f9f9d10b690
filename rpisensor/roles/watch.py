"""
C{rpisensor watch ENDPOINT}: every reading of a Pi's stream on the
terminal, one line each as it comes (C{time name text}), or one JSON object
per line with C{--json}; it reconnects by itself and resumes where it was,
so across a dropped link it misses nothing and repeats nothing. It ends on
Ctrl-C (status 130), when its output is closed (C{| head}: status 0), or
when the server cannot give what was asked (status 1).
"""

from __future__ import annotations

import json
import os
import signal
import sys

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, formatEvent, globalLogBeginner
from twisted.python import usage

from rpisensor.net.reconnect import DEFAULT_DEAD_PEER_TIMEOUT, reconnecting_client
from rpisensor.remote.follow import Audience, FollowFactory
from rpisensor.roles._options.base import OptionsAnywhere, check_client_endpoint, count, non_negative_float
from rpisensor.roles._options.connect import MIN_DEAD_PEER_TIMEOUT
from rpisensor.stream.heartbeat import interval_for
from rpisensor.wire import v2

#: Exit statuses: interrupted (Ctrl-C), as shells report a SIGINT; the server cannot serve what was asked.
INTERRUPTED = 130
UNUSABLE = 1


class WatchOptions(OptionsAnywhere):
    synopsis = "[options] ENDPOINT"
    longdesc = (
        "Print every reading of a Pi's stream as it comes, one line each: the Pi's time (UTC), "
        "the sensor's name and its text; first each sensor's latest reading, then every change. "
        "It reconnects by itself and resumes where it was: nothing missed, nothing twice. "
        "ENDPOINT is a Twisted client endpoint or HOST:PORT. Ctrl-C ends it. "
        "Example: rpisensor watch raspberrypi.local:22000 --json | jq .value"
    )
    optFlags = [
        ["json", None, "One JSON object per line instead: {\"kind\": \"reading\", \"device\", \"stream\", "
         "\"seq\", \"ts\", \"synced\", \"sensor\", \"value\", \"text\", \"unit\"}, and gaps as "
         "{\"kind\": \"gap\", \"from\", \"to\", \"reason\"}."],
    ]  # fmt: skip
    optParameters = [
        ["after", None, None,
         "Start after this seq of the stream instead of at its latest readings: every entry since "
         "(0: everything the Pi's journal still holds). Example: --after 4120"],
        ["max-delay", None, "60", "Longest wait, in seconds, between reconnection attempts."],
        ["dead-peer-timeout", None, str(int(DEFAULT_DEAD_PEER_TIMEOUT)),
         "Seconds without a word from the server (heartbeats come every third of it) before the link "
         "counts as dead and is replaced."],
    ]  # fmt: skip

    def parseArgs(self, endpoint: str) -> None:
        self["endpoint"] = check_client_endpoint("endpoint", endpoint, label="endpoint")

    def postOptions(self) -> None:
        if self["after"] is not None:
            self["after"] = count("after", self["after"])
        self["max-delay"] = non_negative_float("max-delay", self["max-delay"])
        if self["max-delay"] < 1:
            raise usage.UsageError(f"--max-delay must be at least 1 second, got {self['max-delay']:g}")
        timeout = self["dead-peer-timeout"] = non_negative_float("dead-peer-timeout", self["dead-peer-timeout"])
        if timeout < MIN_DEAD_PEER_TIMEOUT:
            raise usage.UsageError(
                f"--dead-peer-timeout must be at least {MIN_DEAD_PEER_TIMEOUT:g} seconds, got {timeout:g}"
            )


def reading_line(reading: v2.Reading) -> str:
    """C{2026-12-01T19:33:25.123Z button Button pressed}: a measurement's text carries its unit."""
    return f"{reading.ts} {reading.sensor} {reading.text}"


def reading_json(reading: v2.Reading, device: str) -> str:
    record = {
        "kind": "reading", "device": device, "stream": reading.stream, "seq": reading.seq, "ts": reading.ts,
        "synced": reading.synced, "sensor": reading.sensor, "value": reading.value, "text": reading.text,
        "unit": reading.unit,
    }  # fmt: skip
    if reading.snapshot:
        record["snapshot"] = True
    return json.dumps(record, ensure_ascii=False)


def gap_text(gap: v2.Gap, device: str, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"kind": "gap", "device": device, "stream": gap.stream, "from": gap.first, "to": gap.last,
             "reason": gap.reason}, ensure_ascii=False,
        )  # fmt: skip
    return f"readings {gap.first} to {gap.last} of stream {gap.stream} will never come ({gap.reason})"


class Printer(Audience):
    """
    Writes what the follower gets: readings to C{out}, one line each,
    flushed (a pipe sees each at once); gaps and the story to C{err}.

    @param finish: called once with the exit status when watching must end.
    """

    def __init__(self, endpoint: str, as_json: bool, finish, out=None, err=None) -> None:
        self._endpoint = endpoint
        self._json = as_json
        self._finish = finish
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._stream: str | None = None
        #: Set once watching ends: the connections this program closes are not news.
        self.quiet = False

    def welcomed(self, welcome: v2.Welcome, after: int | None) -> None:
        if welcome.stream == self._stream:
            return  # a reconnect to the same stream: it simply goes on
        where = "the latest reading of each sensor, then every change" if after is None else f"entries after {after}"
        changed = " (a new stream: the Pi's journal was made anew)" if self._stream is not None else ""
        self._stream = welcome.stream
        self.note(f"following stream {welcome.stream} of {welcome.device}{changed}: {where}")

    def reading(self, reading: v2.Reading, device: str) -> None:
        self._write(reading_json(reading, device) if self._json else reading_line(reading))

    def gap(self, gap: v2.Gap, device: str) -> None:
        if self._json:
            self._write(gap_text(gap, device, True))
        else:
            self.note(gap_text(gap, device, False))

    def unusable(self, why: str) -> None:
        self.note(f"{self._endpoint}: {why}")
        self._finish(UNUSABLE)

    def note(self, text: str) -> None:
        if self.quiet:
            return
        try:
            self._err.write(f"rpisensor watch: {text}\n")
            self._err.flush()
        except (BrokenPipeError, ValueError):
            pass

    def _write(self, line: str) -> None:
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except BrokenPipeError:
            # The reader is gone (| head): end quietly, and let nothing flush into the closed pipe again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._out.fileno())
            os.close(devnull)
            self._finish(0)


def _story_observer(note):
    """The connection story (connecting, disconnected, reconnecting in N s) on stderr, as notes."""

    def observe(event: dict) -> None:
        level = event.get("log_level")
        namespace = event.get("log_namespace", "")
        if level is None or level < LogLevel.info:
            return
        if level < LogLevel.error and not namespace.startswith("rpisensor"):
            return
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None and level >= LogLevel.error:
            text = f"{text}: {failure.getErrorMessage()}"
        note(text)

    return observe


async def run_watch(reactor, options: WatchOptions, out=None, err=None) -> None:
    """Follow the stream until Ctrl-C, a closed output or an unusable server; exit with the status."""
    finished: Deferred[int] = Deferred()

    def finish(status: int) -> None:
        if not finished.called:
            finished.callback(status)

    printer = Printer(options["endpoint"], options["json"], finish, out, err)
    globalLogBeginner.beginLoggingTo([_story_observer(printer.note)], redirectStandardIO=False)
    timeout = options["dead-peer-timeout"]
    factory = FollowFactory(printer, reactor, after=options["after"], heartbeat=interval_for(timeout),
                            new_stream_from_start=True)  # fmt: skip
    client = reconnecting_client(reactor, options["endpoint"], factory, max_delay=options["max-delay"],
                                 dead_peer_timeout=timeout)  # fmt: skip
    previous = signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(finish, INTERRUPTED))
    client.startService()
    try:
        status = await finished
    finally:
        signal.signal(signal.SIGINT, previous)
        printer.quiet = True
        await client.stopService()
    if status:
        raise SystemExit(status)
