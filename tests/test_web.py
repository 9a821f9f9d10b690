"""
The web side's resources, on Twisted's doubles: the JSON API over a real
(in-memory) journal, the event stream's resume, bounds and heartbeats,
simulated presses and their cross-site checks, /metrics as Prometheus parses
it, bad query parameters (fuzzed), unknown paths, oversized requests and the
access policy.
"""

from __future__ import annotations

from dataclasses import replace

import json

from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.net.access import AccessPolicy
from rpisensor.net.limits import ListenSettings
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.entries import Reading
from rpisensor.stream.journal import Journal
from rpisensor.stream.journal_service import JournalService
from rpisensor.web.controls import Controls, IOutputSwitches, SimulatedInputs, SwitchRefused
from rpisensor.web.events import CATCH_UP, EventHub, EventLimits
from rpisensor.web.feed import Feed, JournalFeed, Page, ReceivedFeed, iso_time
from rpisensor.web.metrics import Metrics
from rpisensor.web.service import WebService, WebSettings

START = 1_790_000_000.0


def inline(f, *args):
    """A journal runner that runs in the test's thread."""
    try:
        return succeed(f(*args))
    except Exception:
        from twisted.internet.defer import fail

        return fail()


class Request(DummyRequest):
    """A DummyRequest that takes a push producer (the event stream) and a client address."""

    def __init__(self, path: bytes, method: bytes = b"GET", client: str = "127.0.0.1", **args):
        parts = path.lstrip(b"/").split(b"/")
        super().__init__(parts)
        self.method = method
        self.uri = path
        self.client = IPv4Address("TCP", client, 40000)
        self.producer = None
        for name, value in args.items():
            self.args[name.encode()] = [value if isinstance(value, bytes) else str(value).encode()]

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def body(self) -> bytes:
        return b"".join(self.written)

    def json(self):
        return json.loads(self.body())


class _Reader:
    """What the web side needs of an input reader: its inputs, sensors, their errors and backend."""

    def __init__(self, backend, sensors=()) -> None:
        self.backend = backend
        self.inputs = {DEFAULT_INPUT.name: DEFAULT_INPUT}
        self.sensors = {spec.name: spec for spec in sensors}
        self.errors: dict[str, str] = {}


class WebTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        journal = Journal(None, max_entries=100_000)
        self.journal = JournalService(self.clock, journal, outbox=False, runner=inline)
        self.journal.startService()
        self.addCleanup(self.journal.stopService)
        self.feed = JournalFeed(self.journal, "pi")
        self.metrics = Metrics("serve")
        self.backend = SimulatedGPIO()
        self.backend.setup_input(DEFAULT_INPUT.pin, "up")
        self.reader = _Reader(self.backend)
        self.limits = EventLimits(max_clients=3, max_buffered=2000, heartbeat=15.0)
        self.web = WebService(
            self.clock, WebSettings((), self.limits), ListenSettings(), {"role": "serve", "device": "pi"},
            self.feed, self.metrics, lambda: {"journal": {"last": journal.last}},
            Controls(SimulatedInputs(self.reader)), wall=self.clock.seconds
        )  # fmt: skip
        self.web.startService()
        self.addCleanup(self.web.stopService)

    def record(self, count: int = 1, at: float | None = None, value: int | None = None) -> None:
        """Append readings to the journal and let its flush run."""
        for i in range(count):
            v = (self.journal.journal.last + 1) % 2 if value is None else value
            ts = iso_time(self.clock.seconds() if at is None else at)
            self.journal.append(Reading(ts=ts, synced=True, sensor="button", value=v, text="Button pressed" if v else "Button released"))
        self.clock.advance(0)

    def get(self, path: bytes, method: bytes = b"GET", headers: dict | None = None, **args) -> Request:
        request = Request(path, method, **args)
        for name, value in (headers or {}).items():
            request.requestHeaders.addRawHeader(name, value)
        resource = self.web.root
        while request.postpath and not resource.isLeaf:
            name = request.postpath.pop(0)
            request.prepath.append(name)
            resource = resource.getChildWithDefault(name, request)
        request.render(resource)
        return request


class APITests(WebTestCase):
    def test_state_has_a_tile_per_sensor_and_the_controls(self):
        self.record(3)
        body = self.get(b"/api/state").json()
        self.assertEqual(body["last"], 3)
        self.assertEqual([t["sensor"] for t in body["tiles"]], ["button"])
        tile = body["tiles"][0]
        self.assertEqual((tile["id"], tile["text"], tile["kind"]), (3, "Button pressed", "digital"))
        self.assertEqual(body["controls"], {"simulate": ["button"], "outputs": []})
        self.assertEqual(body["health"], {"journal": {"last": 3}})
        self.assertEqual(body["stream"], self.journal.journal.stream)

    def test_a_remote_client_gets_no_simulate_buttons(self):
        request = Request(b"/api/state", client="192.168.0.9")
        self.assertEqual(self.web.controls.describe(request)["simulate"], [])

    def test_readings_after_an_id(self):
        self.record(5)
        body = self.get(b"/api/readings", after=2).json()
        self.assertEqual([r["id"] for r in body["readings"]], [3, 4, 5])
        self.assertEqual(body["last"], 5)
        self.assertEqual([r["id"] for r in self.get(b"/api/readings", after=2, limit=1).json()["readings"]], [3])

    def test_readings_of_a_time_window(self):
        self.record(2, at=START - 600)
        self.record(3, at=START - 10)
        body = self.get(b"/api/readings", window=60).json()
        self.assertEqual([r["id"] for r in body["readings"]], [3, 4, 5])
        since = self.get(b"/api/readings", since=iso_time(START - 700)).json()
        self.assertEqual(len(since["readings"]), 5)
        newest = self.get(b"/api/readings", since=iso_time(START - 700), limit=2).json()
        self.assertEqual([r["id"] for r in newest["readings"]], [4, 5])

    def test_bad_parameters_are_400_with_a_message(self):
        cases = [
            ({"after": "x"}, "after must be a whole number"),
            ({"after": "-1"}, "after must be a whole number"),
            ({"limit": "0"}, "limit must be from 1 to 10000"),
            ({"window": "nan"}, "window must be more than 0"),
            ({"since": "yesterday"}, "since must be an ISO 8601 time"),
            ({"after": "1", "window": "5"}, "not both"),
            ({"colour": "red"}, "unknown parameter 'colour'"),
            ({"after": "9" * 300}, "longer than 200 bytes"),
        ]
        for args, message in cases:
            request = self.get(b"/api/readings", **args)
            self.assertEqual(request.responseCode, 400, args)
            self.assertIn(message, request.json()["error"])

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(
        st.sampled_from(["after", "since", "window", "limit", "x", "after\xff"]),
        st.binary(max_size=300) | st.text(max_size=40).map(str.encode),
        max_size=4,
    ))  # fmt: skip
    def test_fuzzed_parameters_answer_200_or_400(self, args):
        request = Request(b"/api/readings")
        request.args = {name.encode("utf-8", "surrogateescape"): [value] for name, value in args.items()}
        resource = self.web.root.children[b"api"].children[b"readings"]
        request.render(resource)
        self.assertIn(request.responseCode, (None, 400))
        body = request.json()
        if request.responseCode == 400:
            self.assertTrue(body["error"])
        else:
            self.assertIn("readings", body)

    def test_unknown_paths_are_404(self):
        for path in (b"/nope", b"/api/nope", b"/static/missing.js", b"/static/"):
            self.assertEqual(self.get(path).responseCode, 404, path)

    def test_an_unknown_api_path_answers_json(self):
        """Every API answer is JSON, a 404 too."""
        for path in (b"/api/nope", b"/api/nope/deeper", b"/api/", b"/api"):
            answer = self.get(path)
            self.assertEqual(answer.responseCode, 404, path)
            self.assertEqual(answer.responseHeaders.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
            self.assertIn("no such API", json.loads(answer.body())["error"])

    def test_a_favicon(self):
        answer = self.get(b"/favicon.ico")
        self.assertEqual(answer.responseHeaders.getRawHeaders(b"content-type"), [b"image/x-icon"])
        self.assertEqual(answer.body()[:4], b"\x00\x00\x01\x00")  # an ICO file

    def test_the_page_and_its_assets_come_from_the_package(self):
        page = self.get(b"/").body()
        self.assertIn(b'<script src="/static/app.js"', page)
        self.assertIn(b'<script src="/static/uplot/uPlot.iife.min.js"', page)
        script = self.get(b"/static/app.js")
        self.assertIn(b"EventSource", script.body())
        for path in (b"/", b"/static/app.js", b"/static/style.css", b"/static/uplot/uPlot.min.css"):
            self.assertNotIn(b"http", self.get(path).body(), f"{path}: nothing from the Internet")
        # The plots' library: its one address is in its banner, and its licence is served beside it.
        library = self.get(b"/static/uplot/uPlot.iife.min.js")
        self.assertEqual(library.responseHeaders.getRawHeaders(b"content-type"), [b"text/javascript; charset=utf-8"])
        self.assertTrue(library.body().startswith(b"/*! https://github.com/leeoniya/uPlot (v1.6.32) */"))
        self.assertEqual(library.body().count(b"http"), 1)
        self.assertIn(b"The MIT License", self.get(b"/static/uplot/LICENSE").body())
        self.assertEqual(self.get(b"/static/uplot/missing.js").responseCode, 404)


class SimulateTests(WebTestCase):
    def press(self, action="press", client="127.0.0.1", headers=None, name=b"button"):
        request = Request(b"/api/sim/" + name, b"POST", client=client, action=action)
        sent = {"X-Rpisensor": "1", "Host": "127.0.0.1:8080"} if headers is None else headers
        for header, value in sent.items():
            request.requestHeaders.addRawHeader(header, value)
        request.postpath = [name]
        request.render(self.web.root.children[b"api"].children[b"sim"])
        return request

    def test_press_and_release_drive_the_simulated_pin(self):
        request = self.press()
        self.assertEqual(request.json(), {"input": "button", "text": "Button pressed"})
        self.assertEqual(self.backend.level(DEFAULT_INPUT.pin), False)  # active low
        self.assertEqual(self.press("release").json()["text"], "Button released")
        self.assertEqual(self.backend.level(DEFAULT_INPUT.pin), True)

    def test_without_the_header_it_is_refused(self):
        request = self.press(headers={})
        self.assertEqual(request.responseCode, 403)
        self.assertIn("X-Rpisensor", request.json()["error"])
        self.assertEqual(self.backend.level(DEFAULT_INPUT.pin), True)

    def test_from_another_site_it_is_refused(self):
        request = self.press(headers={"X-Rpisensor": "1", "Origin": "http://evil.example", "Host": "localhost:8080"})
        self.assertEqual(request.responseCode, 403)
        self.assertIn("another site", request.json()["error"])
        same = self.press(headers={"X-Rpisensor": "1", "Origin": "http://localhost:8080", "Host": "localhost:8080"})
        self.assertEqual(same.responseCode, None)
        self.assertEqual(self.press(headers={"X-Rpisensor": "1", "Host": "[::1]:8080"}).responseCode, None)

    def test_a_page_opened_by_another_name_cannot_press(self):
        """DNS rebinding: evil.example resolving to 127.0.0.1 is same-origin for the browser."""
        for host in ("evil.example:8080", "evil.example", "192.168.0.5:8080", ""):
            request = self.press(headers={"X-Rpisensor": "1", "Origin": f"http://{host}", "Host": host})
            self.assertEqual(request.responseCode, 403, host)
        self.assertEqual(self.backend.level(DEFAULT_INPUT.pin), True)

    def test_from_another_machine_it_is_refused(self):
        request = self.press(client="192.168.0.9")
        self.assertEqual(request.responseCode, 403)
        self.assertIn("from this machine", request.json()["error"])

    def test_bad_names_and_actions(self):
        self.assertEqual(self.press(name=b"door").responseCode, 404)
        self.assertEqual(self.press(action="smash").responseCode, 400)
        get = self.get(b"/api/sim/button", action="press")
        self.assertEqual(get.responseCode, 405)


class EventStreamTests(WebTestCase):
    def events(self, request) -> list[dict]:
        out = []
        for block in request.body().decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
            if fields.get("event") == "reading":
                data = json.loads(fields["data"])
                self.assertEqual(int(fields["id"]), data["id"])
                out.append(data)
        return out

    def test_a_new_page_gets_live_readings_only(self):
        self.record(2)
        request = self.get(b"/events")
        self.assertTrue(request.body().startswith(b"retry: 2000\n"))
        self.assertEqual(self.events(request), [])
        self.record(1)
        self.assertEqual([e["id"] for e in self.events(request)], [3])

    def test_last_event_id_resumes_without_loss(self):
        self.record(5)
        request = self.get(b"/events", headers={"Last-Event-ID": "2"}, after="0")
        self.assertEqual([e["id"] for e in self.events(request)], [3, 4, 5])
        self.record(2)
        self.assertEqual([e["id"] for e in self.events(request)], [3, 4, 5, 6, 7])

    def test_a_long_catch_up_comes_in_steps_then_live(self):
        self.record(CATCH_UP * 2 + 3)
        request = self.get(b"/events", after="0")
        ids = [e["id"] for e in self.events(request)]
        self.assertEqual(ids, list(range(1, CATCH_UP * 2 + 4)))
        self.record(1)
        self.assertEqual(self.events(request)[-1]["id"], CATCH_UP * 2 + 4)

    def test_a_gap_entry_in_a_catch_up_step_does_not_end_it(self):
        self.record(CATCH_UP * 2 + 100)
        gap = self.journal.journal.drop_oldest_over(CATCH_UP * 2, "trimmed for the test")
        self.assertEqual((gap.first, gap.last), (1, 101))
        request = self.get(b"/events", after="0")
        self.assertEqual([e["id"] for e in self.events(request)], list(range(102, CATCH_UP * 2 + 101)))

    def test_an_id_from_another_stream_starts_from_now(self):
        self.record(2)
        request = self.get(b"/events", headers={"Last-Event-ID": "999"})
        self.assertEqual(self.events(request), [])
        self.record(1)
        self.assertEqual([e["id"] for e in self.events(request)], [3])

    def test_the_health_event_names_the_stream_first(self):
        request = self.get(b"/events")
        block = request.body().decode().split("\n\n")[1]
        self.assertTrue(block.startswith("event: health\ndata: "), block)
        self.assertEqual(json.loads(block.split("data: ", 1)[1])["stream"], self.journal.journal.stream)

    def test_heartbeat_comments(self):
        request = self.get(b"/events")
        self.clock.advance(self.limits.heartbeat)
        self.assertIn(b"\n: heartbeat\n\n", request.body())

    def test_too_many_pages_get_503(self):
        for _ in range(self.limits.max_clients):
            self.get(b"/events")
        request = self.get(b"/events")
        self.assertEqual(request.responseCode, 503)
        self.assertIn("--web-max-clients", request.json()["error"])

    def test_one_address_gets_at_most_its_share(self):
        """Beyond --web-max-clients-per-host from one address, 429; another address still gets in."""
        hub = self.web.hub
        hub.limits = replace(hub.limits, max_clients=5, max_clients_per_host=2)
        first, _ = self.get(b"/events"), self.get(b"/events")
        refused = self.get(b"/events")
        self.assertEqual(refused.responseCode, 429)
        self.assertEqual(refused.json()["error"], "2 pages from 127.0.0.1 follow the events already "
                         "(--web-max-clients-per-host); close one, or try again later")  # fmt: skip
        self.assertEqual(refused.responseHeaders.getRawHeaders(b"retry-after"), [b"10"])
        other = self.get(b"/events", client="192.168.1.9")
        self.assertIsNone(other.responseCode)  # following
        first.producer.stopProducing()  # the page went away: its slot is free
        self.assertIsNone(self.get(b"/events").responseCode)

    def test_a_page_whose_buffer_does_not_drain_is_dropped(self):
        """A page whose socket's buffer stays full for --web-max-lag is dropped, even on a quiet stream."""
        request = self.get(b"/events")
        request.transport = transport = StringTransport()
        client = request.producer
        client.pauseProducing()
        self.clock.advance(self.limits.max_lag - 1)
        client.resumeProducing()  # it read: the count starts again at the next pause
        client.pauseProducing()
        self.clock.advance(self.limits.max_lag - 1)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.web.hub.clients, set())
        [line] = [e for e in events if e.get("log_format", "").startswith("Dropped a web page")]
        self.assertEqual(line["why"], "its socket's buffer stayed full for 30 s (--web-max-lag)")

    def test_a_page_that_does_not_read_is_dropped_and_resumes(self):
        request = self.get(b"/events")
        client = request.producer
        client.pauseProducing()
        transport = StringTransport()
        request.transport = transport
        self.record(5)
        self.assertFalse(transport.disconnecting)
        self.record(40)  # more than max_buffered bytes held
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(self.web.hub.clients), 0)
        again = self.get(b"/events", headers={"Last-Event-ID": "0"})
        self.assertEqual([e["id"] for e in self.events(again)], list(range(1, 46)))

    def test_a_paused_page_gets_what_was_held_when_it_reads_again(self):
        request = self.get(b"/events")
        client = request.producer
        client.pauseProducing()
        self.record(3)
        self.assertEqual(self.events(request), [])
        client.resumeProducing()
        self.assertEqual([e["id"] for e in self.events(request)], [1, 2, 3])


class _HandFeed(Feed):
    """A feed whose reads the test answers by hand, as a slow journal thread would."""

    stream = "hand"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.reads: list[tuple] = []

    def add(self, count: int) -> None:
        new = [{"id": self.last + n + 1, "device": "pi", "sensor": "door", "value": 1, "text": "door active",
                "unit": None, "ts": "2026-12-01T00:00:00.000Z"} for n in range(count)]  # fmt: skip
        self.events += new
        self._publish(new)

    def after(self, seq: int, limit: int):
        from twisted.internet.defer import Deferred

        d = Deferred()
        self.reads.append((d, seq, limit))
        return d

    def answer(self) -> None:
        d, seq, limit = self.reads.pop(0)
        newer = [e for e in self.events if e["id"] > seq]
        page = newer[:limit]
        d.callback(Page(page, page[-1]["id"] if page else seq, len(newer) > limit))


class HeldEventsTests(SynchronousTestCase):
    def test_events_held_while_catching_up_are_bounded_and_none_is_lost(self):
        """
        100,000 readings published while a page's catch-up read waits: what is held
        stays within --web-max-buffer (the rest is read again from the feed), and
        the page gets every reading once, in order.
        """
        feed = _HandFeed()
        feed.add(10)
        hub = EventHub(feed, Clock(), EventLimits(max_buffered=4096))
        hub.start()
        self.addCleanup(hub.stop)
        request = Request(b"/events")
        client = hub.open(request, 0)
        for _ in range(1000):
            feed.add(100)
            self.assertLessEqual(client._held_bytes, 4096)
            self.assertLessEqual(len(client._held), 40)
        while feed.reads:
            feed.answer()
        self.assertTrue(client.live)
        feed.add(1)
        ids = [int(line[4:]) for line in b"".join(request.written).decode().splitlines() if line.startswith("id: ")]
        self.assertEqual(ids, list(range(1, 100_012)))


class ReceivedFeedTests(SynchronousTestCase):
    def test_numbers_readings_and_resumes_from_its_buffer(self):
        from rpisensor.entries import Reading

        feed = ReceivedFeed(keep=3)
        for seq in range(1, 6):
            feed.on_reading(Reading(device="pi", stream="s", seq=seq, ts=iso_time(START + seq), synced=True, sensor="button", value=seq % 2, unit="t", text=None, peer="peer", received=iso_time(START + seq)))  # fmt: skip
        self.assertEqual(feed.last, 5)
        self.assertEqual([e["id"] for e in self.successResultOf(feed.after(0, 10)).events], [3, 4, 5])
        page = self.successResultOf(feed.after(3, 1))
        self.assertEqual(([e["id"] for e in page.events], page.through, page.more), ([4], 4, True))
        self.assertEqual(self.successResultOf(feed.after(5, 10)).events, [])
        window = self.successResultOf(feed.since(START + 4, 10))
        self.assertEqual(([e["id"] for e in window.events], window.last), ([4, 5], 5))
        self.assertEqual([e["id"] for e in window.before], [3])  # the state the window starts in

    def test_the_tiles_are_bounded_the_oldest_updated_go(self):
        """A reporter naming 10,000 sensors leaves --web-max-tiles tiles, the most recently updated."""
        from rpisensor.entries import Reading

        def reading(device: str, sensor: str) -> Reading:
            return Reading(device=device, stream="s", seq=1, ts=iso_time(START), synced=True, sensor=sensor,
                           value=1, text="t", peer="peer", received=iso_time(START))  # fmt: skip

        feed = ReceivedFeed(max_tiles=3)
        feed.on_reading(reading("kitchen", "door"))
        for n in range(10_000):
            feed.on_reading(reading(f"made-up-{n % 5000}", f"s{n}"))
            if n == 5000:
                feed.on_reading(reading("kitchen", "door"))  # updated: it stays among the newest
        feed.on_reading(reading("kitchen", "door"))
        self.assertEqual(len(feed.latest), 3)
        self.assertEqual(list(feed.latest)[-1], ("kitchen", "door"))
        tiles, _ = self.successResultOf(feed.current())
        self.assertEqual([t["sensor"] for t in tiles], ["s9998", "s9999", "door"])


class MetricsTests(WebTestCase):
    def test_a_stream_sender_counts_readings_once_per_batch(self):
        from rpisensor.stream.sender import SERVE, Position, Sender

        self.record(6)
        self.journal.journal.drop_oldest_over(5, "power cut")  # entries 1 and 2: a gap, not counted
        frames, counts = [], []
        sender = Sender(self.journal, frames.extend, SERVE, print, window=3, on_sent=counts.append)
        sender.start(Position(0))
        self.addCleanup(sender.stop)
        self.assertEqual((len(frames), counts), (2, [1]))  # the gap (1-2) and 3: the window is full
        sender.ack(3)  # 4 from the cache, then 5 and 6 once read from the journal: two more batches
        self.assertEqual((len(frames), counts), (5, [1, 1, 2]))

    def test_metrics_parse_and_count(self):
        self.metrics.read(0.002, False)
        self.metrics.read(0.5, True)
        self.record(4)
        self.get(b"/events", after="0")
        text = self.get(b"/metrics").body().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        self.assertEqual(samples[("rpisensor_readings_in_total", ())], 4)
        self.assertEqual(samples[("rpisensor_readings_out_total", (("to", "web"),))], 4)
        self.assertEqual(samples[("rpisensor_web_event_streams", ())], 1)
        self.assertEqual(samples[("rpisensor_read_seconds_count", ())], 2)
        self.assertEqual(samples[("rpisensor_read_seconds_bucket", (("le", "0.005"),))], 1)
        self.assertEqual(samples[("rpisensor_errors_total", (("kind", "read"),))], 1)
        for name in ("rpisensor_connections", "rpisensor_outbox_depth"):
            self.assertIn(name, families)

    def test_warnings_logged_count_as_errors_by_subsystem(self):
        from twisted.logger import Logger

        Logger(namespace="rpisensor.roles.serve.connection").warn("a test warning")
        text = self.get(b"/metrics").body().decode()
        self.assertIn('rpisensor_errors_total{kind="log:serve"} 1.0', text)


class SiteTests(WebTestCase):
    def connect(self, host="127.0.0.1", policy=None):
        site = self.web.site
        if policy is not None:
            site.policy = policy
        protocol = site.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_an_oversized_body_is_refused_with_413(self):
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /api/sim/button?action=press HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Rpisensor: 1\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"x" * 5000
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "), transport.value()[:200])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.backend.level(DEFAULT_INPUT.pin), True)  # not pressed

    def test_oversized_headers_are_refused(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        self.assertTrue(transport.disconnecting)  # Twisted's bound on the request line and headers (16 KiB)
        self.assertNotIn(b"200 OK", transport.value())

    def test_a_slow_page_over_a_real_channel_is_paused_then_dropped(self):
        """The transport's backpressure reaches the event stream through Twisted's HTTP channel."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertIn(b"text/event-stream", transport.value())
        self.record(1)
        self.assertIn(b"id: 1\n", transport.value())
        (client,) = self.web.hub.clients
        self.clock.advance(self.web.site.timeOut + 1)  # the site's idle timeout does not apply
        self.assertFalse(transport.disconnecting)
        transport.producer.pauseProducing()  # what the transport does once its buffer is full
        self.assertTrue(client.paused)
        self.record(3)
        self.assertNotIn(b"id: 2\n", transport.value())
        transport.producer.resumeProducing()
        self.assertIn(b"id: 4\n", transport.value())
        transport.producer.pauseProducing()
        self.record(40)
        self.assertEqual(self.web.hub.clients, set())
        self.assertTrue(transport.disconnecting)

    def test_a_page_that_stops_reading_over_a_real_channel_is_dropped_after_the_lag(self):
        """Paused by its transport and never resumed, a quiet page is dropped after --web-max-lag."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        transport.producer.pauseProducing()
        self.clock.advance(self.limits.max_lag - 0.5)
        self.assertEqual(len(self.web.hub.clients), 1)
        self.clock.advance(0.5)
        self.assertEqual(self.web.hub.clients, set())
        self.assertTrue(transport.disconnecting)

    def test_connections_beyond_the_limit_are_closed(self):
        site = self.web.site
        site.limits = replace(site.limits, max_connections=1)
        protocol, transport = self.connect()
        self.assertIsNone(site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001)))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002)))

    def test_an_idle_connection_is_closed(self):
        protocol, transport = self.connect()
        self.clock.advance(self.web.site.timeOut + 1)
        self.assertTrue(transport.disconnecting)

    def test_a_request_over_http_is_answered(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertIn(b"200 OK", transport.value().split(b"\r\n")[0])

    def test_peers_outside_the_policy_get_403(self):
        protocol, transport = self.connect("203.0.113.7")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))
        protocol, transport = self.connect("203.0.113.7", AccessPolicy([]))
        protocol.dataReceived(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())


@implementer(IOutputSwitches)
class FakeSwitches:
    """Outputs as the page sees them: granted to 127.0.0.1 only; 'pump' is claimed by another client."""

    names = ["led", "pump"]

    def __init__(self) -> None:
        self.levels = {"led": False, "pump": False}

    def state(self, name):
        return self.levels[name]

    def granted(self, request):
        return request.getClientAddress().host == "127.0.0.1"

    def switch(self, name, on, request):
        if name == "pump":
            return fail(SwitchRefused("set: the outputs are claimed by 192.168.0.7:50000"))
        self.levels[name] = on
        return succeed(f"{name} {'on' if on else 'off'}")


class OutputsTests(WebTestCase):
    def setUp(self):
        super().setUp()
        self.switches = self.web.controls.outputs = FakeSwitches()

    def switch(self, name=b"led", action="on", client="127.0.0.1", headers=None):
        request = Request(b"/api/outputs/" + name, b"POST", client=client, action=action)
        sent = {"X-Rpisensor": "1", "Host": "192.168.0.17:8080"} if headers is None else headers
        for header, value in sent.items():
            request.requestHeaders.addRawHeader(header, value)
        resource = self.web.root
        while request.postpath and not resource.isLeaf:
            resource = resource.getChildWithDefault(request.postpath.pop(0), request)
        request.render(resource)
        return request

    def test_only_a_granted_client_is_shown_switches(self):
        self.assertEqual(self.get(b"/api/state").json()["controls"]["outputs"],
                         [{"name": "led", "on": False}, {"name": "pump", "on": False}])  # fmt: skip
        remote = Request(b"/api/state", client="192.168.0.9")
        self.assertEqual(self.web.controls.describe(remote)["outputs"], [])

    def test_a_granted_client_switches(self):
        self.assertEqual(self.switch().json(), {"output": "led", "text": "led on"})
        self.assertTrue(self.switches.levels["led"])
        self.assertEqual(self.switch(action="off").json()["text"], "led off")

    def test_refusals(self):
        self.assertEqual(self.switch(client="192.168.0.9").responseCode, 403)
        self.assertEqual(self.switch(headers={}).responseCode, 403)
        self.assertEqual(self.switch(name=b"fan").responseCode, 404)
        self.assertEqual(self.switch(action="maybe").responseCode, 400)
        rebound = self.switch(headers={"X-Rpisensor": "1", "Host": "evil.example:8080"})
        self.assertEqual(rebound.responseCode, 403)
        self.assertEqual(rebound.json()["error"], "this server is not 'evil.example': open it by its address or "
                         "its own name, or add --web-host evil.example")  # fmt: skip
        claimed = self.switch(name=b"pump")
        self.assertEqual(claimed.responseCode, 409)
        self.assertIn("claimed by", claimed.json()["error"])
        self.assertFalse(self.switches.levels["led"])

    def test_a_switch_makes_no_dns_lookup(self):
        """A switch's POST asks no DNS (socket.getfqdn could stall deadman timers for seconds)."""
        import socket

        lookups = []
        self.patch(socket, "getfqdn", lambda *a: lookups.append(a) or "pi.example.lan")
        self.patch(socket, "gethostbyaddr", lambda *a: lookups.append(a))
        own = f"{socket.gethostname()}.local:8080"
        self.assertEqual(self.switch(headers={"X-Rpisensor": "1", "Host": own}).json()["text"], "led on")
        self.assertEqual(self.switch(headers={"X-Rpisensor": "1", "Host": "pi-elsewhere"}).responseCode, 403)
        self.assertEqual(lookups, [])

    def test_a_page_opened_by_this_machines_name_switches(self):
        import socket

        own = self.switch(headers={"X-Rpisensor": "1", "Host": f"{socket.gethostname()}.local:8080"})
        self.assertEqual(own.responseCode, None)
        self.assertTrue(self.switches.levels["led"])
