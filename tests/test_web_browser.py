"""
The page in a real browser: headless Chromium, driven by Selenium through
Debian's chromedriver, opens the pages running C{twistd}s serve and checks
what a person sees: the simulated button pressed from the page, a 10 Hz input
followed across a reload, and the plots: state-timeline bars in which a 1 s
press every 4 s stays readable at the default 10-minute range, the state an
input was in before the range carried into it, a measurement's line with its
lowest and highest and its gaps left as gaps, the value under the pointer,
zooming by dragging, a failing sensor's tile with its error, outputs as
switches in their own tiles, and C{collect}'s fleet view.

Skipped, saying why, where Chromium, its driver or Selenium is missing;
C{.ci/run} installs them and sets C{RPISENSOR_BROWSER_REQUIRED}, so in CI it
runs. With C{RPISENSOR_SCREENSHOTS=DIR} the screenshots go there (the
documentation's are made so: C{RPISENSOR_SCREENSHOTS=docs}); otherwise to temporary
files.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import random
import re
import shutil
import threading
import time
import urllib.request

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rpisensor.entries import Reading
from rpisensor.store import SQLiteFile
from rpisensor.stream.journal import Journal
from rpisensor.web.feed import iso_time
from tests.processes import Twistd, connect_tcp, free_port, request, wait_until
from tests.test_query import endpoint, run_rpisensor

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

#: The colour of an active state's bar (app.js's COLOURS.on), as canvas pixels read it.
ON = (47, 158, 68)


def _missing(reason: str) -> Exception:
    """Skip, unless CI installed the browser (RPISENSOR_BROWSER_REQUIRED): then a missing piece fails."""
    if os.environ.get("RPISENSOR_BROWSER_REQUIRED"):
        return AssertionError(f"RPISENSOR_BROWSER_REQUIRED is set, but this test {reason}")
    return SkipTest(reason)


def _browser(width: int = 1100, height: int = 900):
    if CHROMIUM is None or DRIVER is None:
        raise _missing("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise _missing("needs selenium (pip install -e '.[test]')") from None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(DRIVER))


class _AttackerPage:
    """Another site's page, on another port: an empty HTML page served from a thread."""

    def __init__(self) -> None:
        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<!doctype html><title>another site</title>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Page)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def fake_cpu(test: SynchronousTestCase, celsius: float) -> tuple[str, str]:
    """A fake sysfs tree with a CPU temperature: C{(its root, the temperature file)}."""
    sysfs = os.path.abspath(test.mktemp())
    zone = os.path.join(sysfs, "class", "thermal", "thermal_zone0")
    os.makedirs(zone)
    path = os.path.join(zone, "temp")
    write_temperature(path, celsius)
    return sysfs, path


def write_temperature(path: str, celsius: float) -> None:
    with open(path + ".new", "w") as f:
        f.write(f"{round(celsius * 1000)}\n")
    os.replace(path + ".new", path)  # never half a number


class PageTestCase(SynchronousTestCase):
    """A browser on a role's page, and what the tests read off it."""

    def open_browser(self, width: int = 1100, height: int = 900) -> None:
        self.driver = _browser(width, height)
        self.addCleanup(self.driver.quit)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def tile_text(self, sensor: str, part: str = "text", device: str | None = None) -> str | None:
        where = f'[data-device="{device}"]' if device else ""
        return self.js(
            f"const t = document.querySelector('article.tile{where}[data-sensor=\"{sensor}\"] .{part}');"
            "return t ? t.textContent : null;"
        )

    def points(self, sensor: str) -> int:
        return self.js(
            f"const d = window.rpisensor && window.rpisensor.page.info.device;"
            f"return d ? window.rpisensor.points(d, '{sensor}').length : 0;"
        )

    def plot(self, sensor: str, expression: str, device: str | None = None):
        """C{expression} evaluated with C{p}, the plot of C{sensor} (app.js's Plot), and C{u}, its uPlot."""
        return self.js(
            f"const p = window.rpisensor.plot({json.dumps(device)} || window.rpisensor.page.info.device,"
            f" {json.dumps(sensor)}); const u = p.u; return {expression};"
        )

    def bars(self, sensor: str) -> dict:
        """
        The runs of the active colour along a row of the timeline's canvas, as
        drawn, the active states its plot holds and its readout, read at the
        same moment (the plot follows live time: read apart, they can differ).
        """
        return self.plot(sensor, f"""(() => {{
            const b = u.bbox, row = Math.round(b.top + 5);
            const pixels = u.ctx.getImageData(b.left, row, b.width, 1).data;
            let runs = 0, inside = false, widths = [], width = 0;
            for (let i = 0; i < pixels.length; i += 4) {{
                const on = Math.abs(pixels[i] - {ON[0]}) < 8 && Math.abs(pixels[i + 1] - {ON[1]}) < 8
                    && Math.abs(pixels[i + 2] - {ON[2]}) < 8;
                if (on && !inside) runs++;
                if (on) width++; else if (inside) {{ widths.push(width); width = 0; }}
                inside = on;
            }}
            if (inside) widths.push(width);
            const leftmost = [...u.ctx.getImageData(b.left + 1, row, 1, 1).data].slice(0, 3);
            return {{runs, widths, leftmost, width: b.width,
                     active: p.segments.filter(s => s.value > 0).length, segments: p.segments.length,
                     readout: p.readout.textContent}};
        }})()""")

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("RPISENSOR_SCREENSHOTS")  # relative: to the repository (tests run elsewhere)
        path = os.path.join(REPOSITORY, folder, name) if folder else os.path.abspath(self.mktemp()) + ".png"
        self.assertTrue(self.driver.save_screenshot(path))
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class BrowserTests(PageTestCase):
    def setUp(self):
        # A CPU temperature sensor read from a fake sysfs tree the test writes.
        sysfs, self.temperature = fake_cpu(self, 41.2)
        self.twistd = Twistd(
            "rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
            "--input", "button=24", "--input", "door=26", "--sim-pattern", "door=0.1,0.1",
            "--sysfs-root", sysfs, "--sensor", "cpu=cpu,interval=0.2,change=0.05", "--output", "led=12",
            "--web", "tcp:0",
        )  # fmt: skip
        self.addCleanup(self.twistd.close)
        self.port = self.twistd.wait_port("tcp:0")
        self.web = self.twistd.wait_port("tcp:0:interface=127.0.0.1")
        self.url = f"http://127.0.0.1:{self.web}/"
        self.open_browser()

    def set_temperature(self, celsius: float) -> None:
        write_temperature(self.temperature, celsius)

    def page_ids(self) -> list[int]:
        return self.js(
            "return [...window.rpisensor.page.series.values()].flat().map(r => r.id).sort((a, b) => a - b);"
        )

    def journal_ids(self) -> list[int]:
        with urllib.request.urlopen(f"{self.url}api/readings?after=0&limit=10000", timeout=10) as answer:
            return [r["id"] for r in json.load(answer)["readings"]]

    def test_press_on_the_page_reaches_tile_plot_and_clients(self):
        driver = self.driver
        driver.get(self.url)
        wait_until(lambda: self.tile_text("button") == "Button released", describe=lambda: driver.page_source)
        wait_until(lambda: self.points("button") >= 1)
        before = self.points("button")
        with connect_tcp(self.port) as client:  # a tutorial client, connected before the press
            button = driver.find_element("css selector", 'article.tile[data-sensor="button"] button[data-action="press"]')
            button.click()
            pressed = time.monotonic()
            wait_until(lambda: self.tile_text("button") == "Button pressed", timeout=1.0,
                       describe=lambda: f"the tile says {self.tile_text('button')!r}")  # fmt: skip
            self.assertEqual(request(client, b"go"), b"Button pressed\0")
            self.assertLess(time.monotonic() - pressed, 1.0)
        query = run_rpisensor("query", endpoint(self.port), "go")
        self.assertEqual((query.returncode, query.stdout), (0, "Button pressed\n"), query.stderr)
        wait_until(lambda: self.points("button") == before + 1,
                   describe=lambda: f"the plot has {self.points('button')} points, had {before}")  # fmt: skip
        # The new state is a bar of its own, drawn up to now.
        wait_until(lambda: self.plot("button", "p.segments.at(-1).value") == 1)
        self.assertIn("active", driver.find_element("css selector", 'article.tile[data-sensor="button"]')
                      .get_attribute("class"))  # fmt: skip

    def test_an_outputs_switch_in_its_tile_drives_it(self):
        """A page on this machine holds the control grant (the default, loopback): its switch is a set."""
        self.driver.get(self.url)
        toggle = wait_until(lambda: self.driver.find_elements(
            "css selector", 'article.tile.output[data-sensor="led"] .switch input[data-output="led"]'))[0]  # fmt: skip
        wait_until(lambda: self.tile_text("led") == "off")  # its safe level, journaled at start
        self.driver.find_element("css selector", 'article.tile[data-sensor="led"] .switch').click()
        wait_until(lambda: self.tile_text("led") == "on", describe=lambda: repr(self.tile_text("led")))
        query = run_rpisensor("query", endpoint(self.port), "outputs")
        self.assertEqual(query.stdout, "led=on\n", query.stderr)
        self.assertTrue(toggle.is_selected())
        # Switched by another client, the switch follows.
        run_rpisensor("query", endpoint(self.port), "set led off")
        wait_until(lambda: not toggle.is_selected())
        # Its level over time is a timeline as an input's.
        wait_until(lambda: self.plot("led", "p.segments.map(s => s.value).join()").endswith("1,0"))

    def test_a_page_reloaded_mid_stream_misses_no_reading(self):
        driver = self.driver
        driver.get(self.url)
        wait_until(lambda: self.points("door") >= 10, describe=lambda: f"door: {self.points('door')} points")
        driver.refresh()  # the door changes ten times a second meanwhile
        wait_until(lambda: self.tile_text("door") is not None)
        reloaded = self.js("return window.rpisensor.page.last;")
        wait_until(lambda: self.js("return window.rpisensor.page.last;") >= reloaded + 20)
        ids = self.page_ids()
        # Every reading the journal has up to the page's newest, each once: history, then live.
        journal = [i for i in self.journal_ids() if i <= ids[-1]]
        self.assertEqual(ids, journal)
        self.assertEqual(ids, list(range(1, ids[-1] + 1)))

    def test_a_page_cannot_drive_outputs_through_the_sensor_port(self):
        """
        Another site's page makes the browser POST commands to the sensor port (a no-cors
        fetch needs no preflight): the connection is closed at its request line, the led
        stays off, and the log names the attempt.
        """
        attacker = _AttackerPage()
        self.addCleanup(attacker.close)
        self.driver.get(attacker.url)
        outcome = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"fetch('http://127.0.0.1:{self.port}/', {{method: 'POST', mode: 'no-cors', body: '\\0set led on\\0'}})"
            ".then(r => done('answered'), e => done('failed: ' + e));"
        )
        self.assertEqual(outcome, "failed: TypeError: Failed to fetch")  # closed without an answer
        query = run_rpisensor("query", endpoint(self.port), "outputs")
        self.assertEqual(query.stdout, "led=off\n", query.stderr)
        self.twistd.wait_for("began with an HTTP request")
        self.assertNotIn("Control command", self.twistd.log())

    def health_text(self, term: str) -> str | None:
        return self.js(
            f"const dt = [...document.querySelectorAll('#health dt')].find(d => d.textContent === '{term}');"
            "return dt ? dt.nextElementSibling.textContent : null;"
        )

    def test_the_health_says_the_journals_gaps(self):
        self.driver.get(self.url)
        wait_until(lambda: self.health_text("gaps") == "no gaps", describe=lambda: repr(self.health_text("gaps")))
        # A receiving role's stream with gaps, as /api/state gives it: a count and the latest.
        gaps = {"count": 3, "latest": [{"from": 5, "to": 9, "reason": "outbox full"},
                                       {"from": 12, "to": 12, "reason": "power cut"}]}  # fmt: skip
        self.assertEqual(self.js(f"return describeGaps({json.dumps(gaps)});"),
                         "3 gaps, latest: 5–9 (outbox full); 12–12 (power cut)")  # fmt: skip

    def test_a_measurement_has_its_value_and_unit_and_a_line(self):
        self.driver.get(self.url)
        wait_until(lambda: self.tile_text("cpu") == "41.20 °C", describe=lambda: repr(self.tile_text("cpu")))
        before = self.points("cpu")
        self.set_temperature(43.5)
        wait_until(lambda: self.tile_text("cpu") == "43.50 °C", describe=lambda: repr(self.tile_text("cpu")))
        wait_until(lambda: self.points("cpu") == before + 1)
        # The line's newest point is the new reading; the readout says the range's lowest and highest.
        wait_until(lambda: self.plot("cpu", "u.data[1].at(-1)") == 43.5)
        wait_until(lambda: self.tile_text("cpu", "readout") == "min 41.20 °C · max 43.50 °C · 2 readings",
                   describe=lambda: repr(self.tile_text("cpu", "readout")))  # fmt: skip


def write_history(path: str, now: float) -> dict:
    """
    A serve journal with the last 70 minutes of a house: a button pressed for
    1 s every 4 s, a door opened 20 minutes ago and left open, and a CPU
    temperature read every 2 s but for two minutes (a gap). Returns what the
    tests check against.
    """
    journal = Journal(path)
    journal.open()
    noise = random.Random(20)
    start = now - 70 * 60
    entries = [(start - 50 * 60, "door", 0, "Door closed", None), (now - 20 * 60, "door", 1, "Door open", None)]
    t = start
    while t < now - 6:
        entries += [(t, "button", 1, "Button pressed", None), (t + 1, "button", 0, "Button released", None)]
        t += 4
    hole = (now - 7 * 60, now - 5 * 60)
    t = start
    while t < now - 2:
        if not hole[0] <= t < hole[1]:
            celsius = round(45 + 3 * math.sin(t / 300) + noise.uniform(-0.6, 0.6), 2)
            entries.append((t, "cpu", celsius, f"{celsius:.2f} °C", "°C"))
        t += 2
    entries.sort()
    journal.append([Reading(ts=iso_time(t), synced=True, sensor=sensor, value=value, text=text, unit=unit)
                    for t, sensor, value, text, unit in entries])  # fmt: skip
    journal.close()
    return {"hole": hole}


class PlotTests(PageTestCase):
    """The plots of a serve with an hour of history in its journal, in a browser."""

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        now = time.time()
        self.history = write_history(os.path.join(directory, "journal.sqlite"), now)
        sysfs, self.temperature = fake_cpu(self, round(45 + 3 * math.sin(now / 300), 1))  # as the history goes
        self.twistd = Twistd(
            "rpisensor", "serve", "--gpio", "sim", "--listen", "tcp:0", "--journal", "journal.sqlite",
            "--device", "hallway", "--input", "button=24", "--sim-pattern", "button=1,3",
            "--input", "door=26,pull=up,active=high,on=Door open,off=Door closed",
            "--sysfs-root", sysfs, "--sensor", "cpu=cpu,interval=2",
            "--sensor", "fridge=file:sensors/fridge,unit=°C,interval=1",
            "--output", "led=12", "--web", "tcp:0", cwd=directory,
        )  # fmt: skip
        self.addCleanup(self.twistd.close)
        self.port = self.twistd.wait_port("tcp:0")
        self.url = f"http://127.0.0.1:{self.twistd.wait_port('tcp:0:interface=127.0.0.1')}/"
        self.open_browser(1100, 1000)
        self.driver.get(self.url)
        wait_until(lambda: self.js("return document.querySelectorAll('article.tile').length") == 5,
                   describe=self.twistd.log)
        wait_until(lambda: self.points("button") > 100, describe=lambda: self.driver.page_source)

    def test_a_press_every_four_seconds_is_a_bar_each_at_ten_minutes(self):
        bars = wait_until(lambda: (b := self.bars("button"))["active"] >= 140 and b,
                          describe=lambda: repr(self.bars("button")))  # fmt: skip
        # Every press in the range is a bar of its own, with released between them.
        self.assertEqual(bars["runs"], bars["active"], bars)
        self.assertGreater(max(bars["widths"]), 0)
        self.assertLessEqual(max(bars["widths"]), 2, bars)  # a second of 600 on ~500 pixels
        summary = bars["readout"]
        said = re.fullmatch(r"(\d+)× pressed, (\d+) % of the time", summary)
        self.assertIsNotNone(said, summary)
        # Those that began in the range (one may have begun before it), and 1 s of every 4.
        self.assertIn(int(said[1]), range(bars["active"] - 1, bars["active"] + 1))
        self.assertIn(int(said[2]), range(22, 29))

    def test_an_input_that_did_not_change_in_the_range_shows_its_state(self):
        door = self.bars("door")
        # Opened 20 minutes ago: one bar across the whole range, drawn from its left edge.
        self.assertEqual((door["segments"], door["active"], door["runs"]), (1, 1, 1), door)
        self.assertEqual(tuple(door["leftmost"]), ON)
        self.assertGreaterEqual(max(door["widths"]), door["width"] - 2)
        self.assertEqual(self.tile_text("door", "readout"), "open throughout")
        self.assertEqual(self.tile_text("door"), "Door open")
        # Over the last hour, it was closed (since long before) until it opened.
        self.driver.find_element("css selector", "#range option[value='3600']").click()
        wait_until(lambda: self.plot("door", "p.segments.length") == 2,
                   describe=lambda: repr(self.bars("door")))  # fmt: skip
        self.assertEqual(self.plot("door", "p.segments.map(s => s.value).join()"), "0,1")
        self.assertRegex(self.tile_text("door", "readout"), r"^1× open, 3[34] % of the time$")

    def test_a_measurement_is_a_line_with_its_lowest_and_highest_and_gaps(self):
        line = self.plot("cpu", "{dense: p.line.dense, gaps: p.line.gaps, data: u.data}")
        times, means, lows, highs = line["data"]
        # 300 readings on ~500 pixels: each few pixels' mean, with the lowest and highest around it.
        self.assertTrue(line["dense"])
        banded = [(lo, mean, hi) for lo, mean, hi in zip(lows, means, highs) if lo is not None]
        self.assertGreater(len(banded), 50)
        self.assertTrue(all(lo <= mean <= hi for lo, mean, hi in banded))
        self.assertTrue(any(lo < hi for lo, _, hi in banded))
        # The two minutes without readings: a null breaks the line there, and it is hatched.
        start, end = self.history["hole"]
        inside = [i for i, t in enumerate(times) if start + 1 < t < end - 1]
        self.assertEqual([means[i] for i in inside], [None])
        self.assertTrue(any(abs(a - (start - 2)) < 3 and abs(b - end) < 3 for a, b in line["gaps"]), line["gaps"])
        self.assertRegex(self.tile_text("cpu", "readout"), r"^min 4\d\.\d\d °C · max 4\d\.\d\d °C · \d+ readings$")

    def test_a_failing_sensor_has_a_tile_with_its_error(self):
        error = wait_until(lambda: self.tile_text("fridge", "error"), describe=lambda: self.driver.page_source)
        self.assertEqual(error, "fridge: sensors/fridge does not exist (check the path)")
        self.assertEqual(self.tile_text("fridge"), "no reading")
        self.assertIn("failing", self.js("return document.querySelector('article[data-sensor=\"fridge\"]').className"))

    def test_hover_says_the_value_under_the_pointer_on_every_plot(self):
        from selenium.webdriver.common.action_chains import ActionChains

        over = self.plot("button", "u.over")
        pressed = r"^Button pressed · \d\d:\d\d:\d\d\.\d – \d\d:\d\d:\d\d\.\d \(1\.0 s\)$"

        def hover_the_last_whole_press():
            # The middle of the last whole press in the range. The plots follow
            # live time, so a pointer held still comes to lie over other readings:
            # aim again on each try, and read the three readouts at one moment.
            x = self.plot("button", """(() => {
                const s = p.segments.filter(s => s.value > 0 && s.end < u.scales.x.max - 4).at(-1);
                return u.valToPos((s.start + s.end) / 2, 'x') - u.over.clientWidth / 2;
            })()""")
            ActionChains(self.driver).move_to_element_with_offset(over, round(x), 0).perform()
            readouts = self.js(
                "return ['button', 'door', 'cpu'].map(s =>"
                " document.querySelector(`article.tile[data-sensor='${s}'] .readout`).textContent);"
            )
            return readouts if re.match(pressed, readouts[0]) else None

        button, door, cpu = wait_until(
            hover_the_last_whole_press, describe=lambda: repr(self.tile_text("button", "readout"))
        )
        self.assertRegex(button, pressed)
        # The other plots say theirs at the same moment.
        self.assertRegex(door, r"^Door open · \d\d:\d\d:\d\d\.\d – now \(20 min \d+ s\)$")
        self.assertRegex(cpu, r"(°C · \d\d:\d\d:\d\d\.\d$|around \d\d:\d\d:\d\d$)")
        self.screenshot("web-hover.png")

    def test_dragging_across_a_plot_zooms_every_plot(self):
        from selenium.webdriver.common.action_chains import ActionChains

        over = self.plot("button", "u.over")
        width = self.plot("button", "u.over.clientWidth")
        # From 40 % to 55 % of the range: a minute and a half, each press now wide enough for its label.
        ActionChains(self.driver).move_to_element_with_offset(over, round(-0.1 * width), 0).click_and_hold() \
            .move_by_offset(round(0.15 * width), 0).release().perform()
        zoom = wait_until(lambda: self.js("return window.rpisensor.page.zoom"))
        self.assertLess(abs(zoom[1] - zoom[0] - 0.15 * 600), 6, zoom)
        for sensor in ("button", "door", "cpu"):
            self.assertEqual(self.plot(sensor, "[u.scales.x.min, u.scales.x.max]"), zoom)
        bars = self.bars("button")
        self.assertEqual(bars["runs"], bars["active"])
        self.assertGreaterEqual(min(bars["widths"][1:-1]), 4, bars)
        self.assertFalse(self.js("return document.getElementById('unzoom').hidden"))
        ActionChains(self.driver).move_by_offset(0, 200).perform()  # the pointer off the plots
        self.screenshot("web-zoom.png")
        # Double-click: back to the range up to now, following live.
        ActionChains(self.driver).double_click(over).perform()
        wait_until(lambda: self.js("return window.rpisensor.page.zoom") is None)
        self.assertTrue(self.js("return document.getElementById('unzoom').hidden"))

    def test_the_page_as_the_readme_shows_it(self):
        wait_until(lambda: self.tile_text("fridge", "error"))
        wait_until(lambda: self.tile_text("led") == "off")
        self.screenshot("web.png")


def write_store(path: str, now: float) -> None:
    """
    A collector's store with the last quarter of an hour of two devices (their
    reporters ran before, each in a stream of its own): a kitchen's button
    pressed now and then, a garage's door and CPU temperature.
    """
    store = SQLiteFile(path)
    store.open()
    noise = random.Random(21)
    records = []

    def add(device: str, stream: str, t: float, sensor: str, value, text: str, unit: str | None = None) -> None:
        seq = sum(r.stream == stream for r in records) + 1
        records.append(Reading(device=device, stream=stream, seq=seq, ts=iso_time(t), synced=True, sensor=sensor,
                               value=value, unit=unit, text=text, peer="127.0.0.1:40000",
                               received=iso_time(t + 0.05)))  # fmt: skip

    t = now - 900
    while t < now - 60:
        add("kitchen", "k0", t, "button", 1, "Button pressed")
        add("kitchen", "k0", t + noise.uniform(1, 4), "button", 0, "Button released")
        t += noise.uniform(15, 45)
    for back, value, text in ((2400, 0, "Door closed"), (480, 1, "Door open"), (180, 0, "Door closed")):
        add("garage", "g0", now - back, "door", value, text)
    for i in range(84):
        celsius = round(38.4 + 1.2 * math.sin(i / 12) + noise.uniform(-0.3, 0.3), 2)
        add("garage", "g0", now - 900 + 10 * i, "cpu", celsius, f"{celsius:.2f} °C", "°C")
    store.write(sorted(records, key=lambda r: r.ts))
    store.close()


class FleetTests(PageTestCase):
    """C{collect}'s page: a row per device with its link, newest readings and gaps, then its tiles."""

    def test_a_row_per_device_then_its_tiles(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        write_store(os.path.join(directory, "readings.sqlite"), time.time())
        port = free_port()
        kitchen = Twistd("rpisensor", "report", "--gpio", "sim", "--connect", f"127.0.0.1:{port}",
                         "--outbox", "none", "--outbox-max", "5", "--max-delay", "1", "--device", "kitchen",
                         "--on-change", "--sim-pattern", "button=0.5,1.5")  # fmt: skip
        self.addCleanup(kitchen.close)
        kitchen.wait_for("The outbox is full")  # no collector yet: the oldest readings become a gap
        sysfs, _ = fake_cpu(self, 38.4)
        garage = Twistd("rpisensor", "report", "--gpio", "sim", "--connect", f"127.0.0.1:{port}",
                        "--outbox", "none", "--max-delay", "1", "--device", "garage", "--on-change",
                        "--input", "door=26,pull=up,active=high,on=Door open,off=Door closed",
                        "--sysfs-root", sysfs, "--sensor", "cpu=cpu,interval=1")  # fmt: skip
        self.addCleanup(garage.close)
        collect = Twistd("rpisensor", "collect", "--listen", f"tcp:{port}:interface=127.0.0.1",
                         "--store", "readings.sqlite", "--web", "tcp:0", cwd=directory)  # fmt: skip
        self.addCleanup(collect.close)
        web = collect.wait_port("tcp:0:interface=127.0.0.1")
        self.open_browser(1100, 900)
        self.driver.get(f"http://127.0.0.1:{web}/")

        def rows() -> dict:
            return self.js("""return Object.fromEntries([...document.querySelectorAll('#fleet tbody tr')]
                .map(r => [r.dataset.device, [...r.cells].map(c => c.textContent)]));""")

        wait_until(lambda: set(rows()) == {"kitchen", "garage"}, describe=collect.log)
        wait_until(lambda: all(r[1].startswith("connected from 127.0.0.1:") for r in rows().values()),
                   describe=lambda: repr(rows()))  # fmt: skip
        # The store's history shows first (its cpu values have °C too); then the live reporters' readings.
        wait_until(lambda: "cpu 38.40 °C" in rows()["garage"][2] and "door Door open" in rows()["garage"][2]
                   and "Button" in rows()["kitchen"][2], describe=lambda: repr(rows()))  # fmt: skip
        kitchen_row = wait_until(lambda: (r := rows()["kitchen"])[3].startswith("1 gap") and r,
                                 describe=lambda: repr(rows()))  # fmt: skip
        self.assertRegex(kitchen_row[3], r"^1 gap, latest: 1–\d+ \(outbox full\)$")
        self.assertEqual(rows()["garage"][3], "no gaps")
        self.assertRegex(rows()["garage"][2], r"cpu 38\.40 °C \d+ s ago")
        self.assertIn("door Door open", rows()["garage"][2])
        # Below the rows, each device's tiles, in the order of the rows, with the store's history.
        boxes = self.js("return [...document.querySelectorAll('#devices .device')].map(d => d.dataset.device)")
        self.assertEqual(boxes, ["garage", "kitchen"])
        self.assertGreater(self.plot("button", "p.segments.length", device="kitchen"), 20)
        self.assertEqual(self.plot("door", "p.segments.map(s => s.value).join()", device="garage"), "0,1,0,1")
        self.assertEqual(self.tile_text("cpu", device="garage"), "38.40 °C")
        # The garage's reporter stops: its row says so, and its tiles are stale.
        garage.stop()
        wait_until(lambda: rows()["garage"][1].startswith("not connected"), describe=lambda: repr(rows()))
        wait_until(lambda: "stale" in self.js(
            "return document.querySelector('article[data-device=\"garage\"][data-sensor=\"door\"]').className"))
        self.screenshot("web-fleet.png")
