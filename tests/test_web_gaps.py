"""
The gaps on the page's health, on Twisted's doubles: read back from real
SQLite and JSON Lines stores and from serve's journal, shown in C{/api/state}
and pushed as a health event as soon as a gap is stored; the receiving
roles hand stored gaps over (L{Delivery}'s C{on_gap}).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.limits import ListenSettings
from rpisensor.store import JsonLinesFile, SQLiteFile
from rpisensor.stream.delivery import Delivery
from rpisensor.stream.journal import Journal
from rpisensor.stream.journal_service import JournalService
from rpisensor.stream.receiver import StreamState
from rpisensor.entries import Gap, Reading
from rpisensor.web.feed import ReceivedFeed, iso_time
from rpisensor.web.gaps import LATEST, ReceivedGaps
from rpisensor.web.history import jsonl_gaps, sqlite_gaps
from rpisensor.web.roles import receiver_web, serve_web
from rpisensor.web.service import WebSettings
from tests.test_web import START, Request, _Reader, inline

RECEIVED = "2026-12-01T22:00:00.000Z"


def gap(first: int, last: int, reason: str = "outbox full", device: str = "kitchen") -> Gap:
    return Gap(device=device, stream="s1", first=first, last=last, reason=reason, peer="127.0.0.1:5000", received=RECEIVED)


def reading(seq: int, device: str = "kitchen") -> Reading:
    return Reading(device=device, stream="s1", seq=seq, ts=RECEIVED, synced=True, sensor="button", value=1, unit="Button pressed", text=None, peer="127.0.0.1:5000", received=RECEIVED)  # fmt: skip


def render(root, path: bytes, **args) -> Request:
    request = Request(path, **args)
    resource = root
    while request.postpath and not resource.isLeaf:
        name = request.postpath.pop(0)
        request.prepath.append(name)
        resource = resource.getChildWithDefault(name, request)
    request.render(resource)
    return request


def health_events(request: Request) -> list[dict]:
    events = []
    for block in request.body().decode().split("\n\n"):
        lines = block.split("\n")
        if "event: health" in lines:
            events.append(json.loads(next(line for line in lines if line.startswith("data: "))[6:]))
    return events


class StoreHistoryTests(SynchronousTestCase):
    """Each stream's gaps as the stores hold them: a count, and the newest few, oldest first."""

    def records(self) -> list:
        records = [reading(1)]
        records += [gap(2 * n, 2 * n, f"reason {n}") for n in range(1, LATEST + 3)]
        records.append(gap(5, 9, "power cut", device="garage"))
        return records

    def check(self, history: dict) -> None:
        count, latest = history["kitchen", "s1"]
        self.assertEqual(count, LATEST + 2)
        self.assertEqual([g["from"] for g in latest], [2 * n for n in range(3, LATEST + 3)])
        self.assertEqual(latest[-1], {"from": 2 * (LATEST + 2), "to": 2 * (LATEST + 2),
                                      "reason": f"reason {LATEST + 2}", "received": RECEIVED})  # fmt: skip
        self.assertEqual(history["garage", "s1"], (1, [{"from": 5, "to": 9, "reason": "power cut",
                                                         "received": RECEIVED}]))  # fmt: skip

    def test_sqlite(self):
        path = self.mktemp() + ".sqlite"
        store = SQLiteFile(path)
        store.open()
        store.write(self.records())
        store.close()
        self.check(sqlite_gaps(store.path))

    def test_json_lines_skip_what_they_cannot_read(self):
        path = self.mktemp() + ".jsonl"
        store = JsonLinesFile(path)
        store.open()
        store.write(self.records())
        store.close()
        with open(path, "a") as f:
            f.write('{"kind": "gap", "device": "kitchen"}\n{"kind": "gap", "dev')  # no seqs; a torn line
        self.check(jsonl_gaps(store.path))


class ReceiverGapsTests(SynchronousTestCase):
    """C{collect}'s (and C{poll --subscribe}'s) page: the store's gaps, then each one stored."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.states = [StreamState("kitchen", "s1", 40, 40), StreamState("garage", "s1", 3, 3)]
        stored = {("kitchen", "s1"): (7, [{"from": 10, "to": 19, "reason": "outbox full"}])}
        self.gaps = ReceivedGaps(lambda: succeed(stored))
        self.web = receiver_web(
            self.clock, "collect", WebSettings(), ListenSettings(), None, lambda: self.states,
            feed=ReceivedFeed(), gaps=self.gaps,
        )  # fmt: skip
        self.web.startService()
        self.addCleanup(self.web.stopService)

    def streams(self) -> dict:
        health = render(self.web.root, b"/api/state").json()["health"]
        return {s["device"]: s["gaps"] for s in health["streams"]}

    def test_state_shows_each_streams_gaps_from_the_store(self):
        self.assertEqual(self.streams(), {
            "garage": {"count": 0, "latest": []},
            "kitchen": {"count": 7, "latest": [{"from": 10, "to": 19, "reason": "outbox full"}]},
        })  # fmt: skip

    def test_a_stored_gap_is_pushed_to_the_pages_at_once(self):
        events = render(self.web.root, b"/events")
        self.assertEqual(len(health_events(events)), 1)  # the health when the page opened
        self.gaps.on_gap(gap(41, 45))
        self.gaps.on_gap(gap(2, 3, "power cut", device="garage"))
        pushed = health_events(events)  # no clock advanced: not the periodic check
        self.assertEqual(len(pushed), 3)
        kitchen = next(s for s in pushed[-1]["streams"] if s["device"] == "kitchen")
        self.assertEqual(kitchen["gaps"]["count"], 8)
        self.assertEqual(kitchen["gaps"]["latest"][-1],
                         {"from": 41, "to": 45, "reason": "outbox full", "received": RECEIVED})  # fmt: skip
        self.assertEqual(self.streams()["garage"]["count"], 1)

    def test_a_gap_told_twice_counts_once(self):
        self.gaps.on_gap(gap(41, 45))
        self.gaps.on_gap(gap(41, 45))
        self.gaps.on_gap(gap(15, 19))  # the store's history had it already
        self.assertEqual(self.streams()["kitchen"]["count"], 8)

    def test_gaps_stored_while_the_history_was_read_are_counted_once(self):
        gaps = ReceivedGaps(lambda: succeed({("kitchen", "s1"): (2, [{"from": 5, "to": 6, "reason": "r"}])}))
        gaps.on_gap(gap(5, 6, "r"))  # in the store too
        gaps.on_gap(gap(8, 8, "r"))  # not yet
        gaps.start()
        self.assertEqual(gaps.of("kitchen", "s1")["count"], 3)
        self.assertEqual([g["from"] for g in gaps.of("kitchen", "s1")["latest"]], [5, 8])


class ServeGapsTests(SynchronousTestCase):
    """C{serve}'s page: the gaps C{status} reports, those trimmed away included."""

    def test_the_journals_gaps_and_what_it_trimmed(self):
        clock = Clock()
        clock.advance(START)
        journal = Journal(None, max_entries=100_000)
        service = JournalService(clock, journal, outbox=False, runner=inline)
        service.startService()
        self.addCleanup(service.stopService)
        for _ in range(10):
            service.append(Reading(ts=iso_time(START), synced=True, sensor="button", value=1, text="Button pressed"))
        clock.advance(0)
        journal.drop_oldest_over(8, "power cut")  # entries 1 to 3 become a gap entry
        top = SimpleNamespace(factory=SimpleNamespace(connections=[], controller=None, grants=None))
        publishing = SimpleNamespace(journal=service, device="pi", subscriptions=set(), on_sent=None)
        web = serve_web(clock, WebSettings(), ListenSettings(), top, _Reader(SimpleNamespace(name="rpi")), publishing)
        web.startService()
        self.addCleanup(web.stopService)
        gaps = render(web.root, b"/api/state").json()["health"]["journal"]["gaps"]
        self.assertEqual(gaps, {"count": 1, "latest": [{"from": 1, "to": 3, "reason": "power cut"}]})
        events = render(web.root, b"/events")
        journal.trim_to(4)  # the gap and entries 4 to 6 go
        clock.advance(2.0)  # the next health check
        pushed = health_events(events)[-1]["journal"]["gaps"]
        self.assertEqual(pushed, {"count": 1, "latest": [{"from": 1, "to": 6, "reason": "trimmed"}]})


class DeliveryGapTests(SynchronousTestCase):
    """The receiving roles tell C{on_gap} of each gap once it is stored, with or without on_reading."""

    def test_batches_and_single_records(self):
        told = []
        for on_reading in (None, lambda r: None):
            told.clear()
            delivery = Delivery(None, on_reading, told.append)
            self.successResultOf(delivery.many([reading(1), gap(2, 4), reading(5), gap(6, 6)]))
            self.successResultOf(delivery(gap(7, 9)))
            self.successResultOf(delivery(reading(10)))
            self.assertEqual([(g.first, g.last) for g in told], [(2, 4), (6, 6), (7, 9)])

    def test_a_failing_on_gap_does_not_hold_up_the_acknowledgement(self):
        def broken(_):
            raise RuntimeError("broken")

        delivery = Delivery(None, None, broken)
        self.successResultOf(delivery.many([gap(2, 4)]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
