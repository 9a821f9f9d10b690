"""
What the page's plots are drawn from, on Twisted's doubles: the readings of a
time window with the state each sensor was in before it (so an input that did
not change in the window still shows its state), from C{serve}'s journal and
from real SQLite and JSON Lines stores; from when a window cut by its limit is
complete; and on C{serve}, a tile for every input, sensor and output it
declares, with the error of a sensor whose reads fail.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.entries import Reading
from rpisensor.hw.interfaces import SensorReadError
from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.net.limits import ListenSettings
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.measure import MeasurementSpec
from rpisensor.sensing.reader import InputReader
from rpisensor.store import JsonLinesFile, SQLiteFile
from rpisensor.stream.journal import Journal
from rpisensor.stream.journal_service import JournalService
from rpisensor.web.feed import JournalFeed, ReceivedFeed, iso_time
from rpisensor.web.history import StoredWindow, jsonl_window, sqlite_window, store_history
from rpisensor.web.roles import serve_web
from rpisensor.web.service import WebSettings
from tests.test_web import START, inline
from tests.test_web_gaps import render


def at(seconds_before: float) -> str:
    return iso_time(START - seconds_before)


def stream_reading(seq: int, sensor: str, value, ts: str, device: str = "kitchen") -> Reading:
    """A reading as a receiving role stores it."""
    return Reading(device=device, stream="s1", seq=seq, ts=ts, synced=True, sensor=sensor, value=value,
                   text=f"{sensor} {value}", peer="127.0.0.1:5000", received=ts)  # fmt: skip


#: A door that opened long ago and stayed open; a button pressed before the window and in it.
HISTORY = [
    ("door", 1, 3600), ("button", 1, 900), ("button", 0, 899), ("button", 1, 30), ("button", 0, 29),
]  # fmt: skip


class JournalWindowTests(SynchronousTestCase):
    """C{serve}: the window and the state before it, from the journal."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.service = JournalService(self.clock, Journal(None, max_entries=100_000), outbox=False, runner=inline)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        for sensor, value, back in HISTORY:
            self.service.append(Reading(ts=at(back), synced=True, sensor=sensor, value=value, text=f"{sensor} {value}"))
        self.clock.advance(0)
        self.feed = JournalFeed(self.service, "pi")

    def test_each_sensor_starts_in_its_state_before_the_window(self):
        window = self.successResultOf(self.feed.since(START - 600, 100))
        self.assertEqual([(e["sensor"], e["value"]) for e in window.events], [("button", 1), ("button", 0)])
        # The door did not change in the window: its state comes from before it.
        self.assertEqual([(e["sensor"], e["value"], e["id"]) for e in window.before],
                         [("door", 1, 1), ("button", 0, 3)])  # fmt: skip
        self.assertEqual((window.start, window.last), (at(600), 5))

    def test_a_window_cut_by_its_limit_says_from_when_it_is_complete(self):
        window = self.successResultOf(self.feed.since(START - 600, 1))
        self.assertEqual([e["id"] for e in window.events], [5])
        self.assertEqual(window.start, at(29))
        # The state before that: the press the limit left out is the button's.
        self.assertEqual([(e["sensor"], e["id"]) for e in window.before], [("door", 1), ("button", 4)])

    def test_the_api_answers_it(self):
        from rpisensor.web.api import ReadingsResource
        from tests.test_web import Request

        request = Request(b"/api/readings", window=600)
        request.render(ReadingsResource(self.feed, self.clock.seconds))
        body = request.json()
        self.assertEqual(sorted(body), ["before", "from", "last", "readings"])
        self.assertEqual([r["sensor"] for r in body["before"]], ["door", "button"])
        self.assertEqual(body["from"], at(600))


class StoreWindowTests(SynchronousTestCase):
    """C{collect}, C{poll --subscribe}: the same, from each kind of store."""

    def write(self, store_class, suffix: str):
        store = store_class(self.mktemp() + suffix)
        store.open()
        records = [stream_reading(seq, sensor, value, at(back))
                   for seq, (sensor, value, back) in enumerate(HISTORY, 1)]  # fmt: skip
        records.append(stream_reading(1, "button", 1, at(7200), device="garage"))
        store.write(records)
        store.close()
        return store.path

    def check(self, read) -> None:
        window = read(at(600), 100)
        self.assertEqual([(r.sensor, r.value) for r in window.readings], [("button", 1), ("button", 0)])
        before = sorted((r.device, r.sensor, r.value, r.ts) for r in window.before)
        self.assertEqual(before, [("garage", "button", 1, at(7200)), ("kitchen", "button", 0, at(899)),
                                  ("kitchen", "door", 1, at(3600))])  # fmt: skip
        self.assertEqual(window.start, at(600))
        cut = read(at(600), 1)
        self.assertEqual(([r.ts for r in cut.readings], cut.start), ([at(29)], at(29)))
        self.assertIn(("kitchen", "button", 1), {(r.device, r.sensor, r.value) for r in cut.before})

    def test_sqlite(self):
        path = self.write(SQLiteFile, ".sqlite")
        self.check(lambda begin, limit: sqlite_window(path, begin, limit))

    def test_json_lines(self):
        path = self.write(JsonLinesFile, ".jsonl")
        with open(path, "a") as f:
            f.write('{"kind": "reading", "device": "x"}\n{"kind": "read')  # no fields; a torn line
        self.check(lambda begin, limit: jsonl_window(path, begin, limit))

    def test_store_history_reads_in_a_thread(self):
        self.assertIsNone(store_history(None))
        self.assertIsNotNone(store_history(str(self.write(SQLiteFile, ".sqlite"))))


class ReceivedWindowTests(SynchronousTestCase):
    """What a receiving role's feed answers: the store's window merged with what it received since it started."""

    def test_without_a_store_the_state_before_comes_from_what_was_received(self):
        feed = ReceivedFeed()
        for seq, (sensor, value, back) in enumerate(HISTORY, 1):
            feed.on_reading(stream_reading(seq, sensor, value, at(back)))
        window = self.successResultOf(feed.since(START - 600, 100))
        self.assertEqual([e["id"] for e in window.events], [4, 5])
        self.assertEqual([(e["sensor"], e["id"]) for e in window.before], [("door", 1), ("button", 3)])
        cut = self.successResultOf(feed.since(START - 600, 1))
        self.assertEqual(([e["id"] for e in cut.events], cut.start), ([5], at(29)))
        self.assertEqual([(e["sensor"], e["id"]) for e in cut.before], [("door", 1), ("button", 4)])

    def test_the_stores_window_comes_first_each_reading_once(self):
        older = [SimpleNamespace(device="kitchen", sensor="button", ts=at(100), value=1, text="on", unit=None),
                 SimpleNamespace(device="kitchen", sensor="button", ts=at(29), value=0, text="off", unit=None)]
        stored = StoredWindow(older, [SimpleNamespace(device="kitchen", sensor="door", ts=at(3600), value=1,
                                                      text="open", unit=None)], at(600))  # fmt: skip
        feed = ReceivedFeed(history=lambda begin, limit: succeed(stored))
        feed.on_reading(stream_reading(9, "button", 0, at(29)))  # stored too: shown once, with its page id
        window = self.successResultOf(feed.since(START - 600, 100))
        self.assertEqual([(e["ts"], e["id"]) for e in window.events], [(at(100), 0), (at(29), 1)])
        self.assertEqual([e["sensor"] for e in window.before], ["door"])
        self.assertEqual(window.last, 1)

    def test_a_store_that_cannot_be_read_fails_the_answer(self):
        feed = ReceivedFeed(history=lambda begin, limit: fail(OSError("disk gone")))
        self.failureResultOf(feed.since(START - 600, 100), OSError)


class FailingSensor:
    """A measurement that fails until it is fixed."""

    def __init__(self) -> None:
        self.broken = True

    def __call__(self) -> float:
        if self.broken:
            raise SensorReadError("cpu: cannot read /sys/class/thermal/thermal_zone0/temp: No such file")
        return 41.5


class DeclaredSensorsTests(SynchronousTestCase):
    """C{serve}'s page has a tile for everything it declares, each of its kind; a failing sensor's says why."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.service = JournalService(self.clock, Journal(None, max_entries=100_000), outbox=False, runner=inline)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.measure = FailingSensor()
        self.spec = MeasurementSpec("cpu", "file", interval=45.0, unit="°C")
        object.__setattr__(self.spec, "measure", self.measure)
        backend = SimulatedGPIO()
        self.reader = InputReader(backend, [DEFAULT_INPUT], inline, self.clock, sensors=[self.spec])
        self.reader.setup()
        top = SimpleNamespace(factory=SimpleNamespace(connections=[], controller=None, grants=None))
        publishing = SimpleNamespace(journal=self.service, device="pi", subscriptions=set(), on_sent=None)
        outputs = SimpleNamespace(names=["led"], granted=lambda request: False)
        self.web = serve_web(self.clock, WebSettings(stale_after=60.0), ListenSettings(), top, self.reader,
                             publishing, outputs=outputs)  # fmt: skip
        self.web.startService()
        self.addCleanup(self.web.stopService)

    def state(self) -> dict:
        return render(self.web.root, b"/api/state").json()

    def test_every_declared_input_sensor_and_output(self):
        sensors = self.state()["sensors"]
        self.assertEqual(sensors, [
            {"sensor": "button", "kind": "digital", "levels": ["Button released", "Button pressed"]},
            {"sensor": "cpu", "kind": "measurement", "unit": "°C", "stale_after": 90.0},
            {"sensor": "led", "kind": "output", "levels": ["off", "on"]},
        ])  # fmt: skip

    def test_a_failing_sensors_error_until_it_reads_again(self):
        self.failureResultOf(self.reader.read("cpu"), SensorReadError)
        self.flushLoggedErrors()
        self.assertEqual(self.state()["health"]["errors"],
                         {"cpu": "cpu: cannot read /sys/class/thermal/thermal_zone0/temp: No such file"})  # fmt: skip
        self.measure.broken = False
        self.assertEqual(self.successResultOf(self.reader.read("cpu")).value, 41.5)
        self.assertEqual(self.state()["health"]["errors"], {})

    def test_a_tiles_kind_is_what_the_role_declares(self):
        # An output's level is 0 or 1 without a unit, as an input's: only the declaration tells them apart.
        self.service.append(Reading(ts=at(5), synced=True, sensor="led", value=1, text="on"))
        self.service.append(Reading(ts=at(4), synced=True, sensor="cpu", value=1, text="1.00 °C", unit="°C"))
        self.clock.advance(0)
        self.successResultOf(self.web.feed.start())
        tiles = {t["sensor"]: (t["kind"], t["stale_after"]) for t in self.state()["tiles"]}
        self.assertEqual(tiles, {"led": ("output", None), "cpu": ("measurement", 90.0)})
