"""
C{--web} on each role: its options, and real twistd processes whose pages
show what they receive (C{poll --subscribe} from a C{serve}, C{collect} from
a C{report}), with history from the store and each stream's link health.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rpisensor.app.tap import Options
from tests.certs import escape, write_pki
from tests.processes import Twistd, free_port, wait_until
from tests.test_query import endpoint, run_rpisensor


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return json.load(answer)


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def loopback(port: int) -> list[str]:
    """What --web PORT listens on: 127.0.0.1, and ::1 where the machine has it."""
    return [f"tcp:{port}:interface=127.0.0.1"] + ([rf"tcp6:{port}:interface=\:\:1"] if _has_ipv6_loopback() else [])


class OptionTests(SynchronousTestCase):
    def test_a_bare_port_or_tcp_listens_on_loopback(self):
        """Both loopbacks, IPv4's and IPv6's: a browser may reach localhost over either."""
        options = parse("--web", "8080", "--web", "tcp:8081", "--web", "tcp:8082:interface=0.0.0.0",
                        "--web", "tcp:0")  # fmt: skip
        self.assertEqual(
            options.subOptions["web"],
            [*loopback(8080), *loopback(8081), "tcp:8082:interface=0.0.0.0", "tcp:0:interface=127.0.0.1"],
        )
        self.assertEqual(options.subCommand, "serve")

    def test_every_role_but_report_takes_it(self):
        self.assertEqual(parse("collect", "--web", "8080").subOptions["web"], loopback(8080))
        poll = parse("poll", "--connect", "pi:22000", "--subscribe", "--web", "8080")
        self.assertEqual(poll.subOptions["web"], loopback(8080))
        with self.assertRaises(usage.UsageError):
            parse("report", "--connect", "pi:22000", "--web", "8080")

    def test_poll_needs_subscribe(self):
        with self.assertRaises(usage.UsageError) as caught:
            parse("poll", "--connect", "pi:22000", "--web", "8080")
        self.assertIn("--web needs --subscribe", str(caught.exception))

    def test_bad_endpoints_and_limits_are_usage_errors(self):
        with self.assertRaises(usage.UsageError) as caught:
            parse("--web", "tcp:eighty")
        self.assertIn("--web tcp:eighty", str(caught.exception))
        with self.assertRaises(usage.UsageError):
            parse("--web", "8080", "--web-max-clients", "0")
        with self.assertRaises(usage.UsageError):
            parse("--web", "8080", "--web-heartbeat", "0")
        for option in ("--web-max-clients-per-host", "--web-max-lag"):
            with self.assertRaises(usage.UsageError, msg=option):
                parse("--web", "8080", option, "0")

    def test_the_tiles_limit(self):
        """--web-max-tiles (1000) bounds the page's tiles; the web service gives it to the feed."""
        self.assertEqual(parse("--web", "8080").subOptions.web_settings().max_tiles, 1000)
        self.assertEqual(parse("--web", "8080", "--web-max-tiles", "5").subOptions.web_settings().max_tiles, 5)
        with self.assertRaises(usage.UsageError):
            parse("--web", "8080", "--web-max-tiles", "0")

    def test_web_host_names(self):
        """--web-host adds names the page answers to (repeatable); a port or a URL is a usage error."""
        options = parse("--web", "8080", "--web-host", "Sensors.Example.org.", "--web-host", "pi.lan")
        self.assertEqual(options.subOptions.web_settings().hosts, ("sensors.example.org", "pi.lan"))
        for bad in ("pi.lan:8080", "http://pi.lan/", ""):
            with self.assertRaises(usage.UsageError, msg=bad):
                parse("--web", "8080", "--web-host", bad)

    def test_the_event_streams_limits(self):
        """--web-max-clients-per-host and --web-max-lag reach the event streams; 10 and 30 s by default."""
        limits = parse("--web", "8080").subOptions.web_settings().events
        self.assertEqual((limits.max_clients_per_host, limits.max_lag), (10, 30.0))
        limits = parse("--web", "8080", "--web-max-clients-per-host", "3", "--web-max-lag", "5").subOptions.web_settings().events
        self.assertEqual((limits.max_clients_per_host, limits.max_lag), (3, 5.0))

    def test_with_client_certificates_the_page_needs_tls_too(self):
        pki = write_pki(self.mktemp())
        with self.assertRaises(usage.UsageError) as caught:
            parse("--listen", f"ssl:0:privateKey={escape(pki.server_key)}:certKey={escape(pki.server_cert)}",
                  "--client-ca", pki.ca_cert, "--web", "8080")  # fmt: skip
        self.assertIn("--client-ca needs every --web to be ssl:", str(caught.exception))

    def test_a_bare_port_answers_on_both_loopbacks(self):
        if not _has_ipv6_loopback():
            raise SkipTest("this machine has no IPv6 loopback (::1)")
        port = free_port()
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen",
                       "tcp:0:interface=127.0.0.1", "--web", str(port))  # fmt: skip
        self.addCleanup(serve.close)
        serve.wait_listening(rf"tcp6:{port}:interface=\:\:1")
        for host in ("127.0.0.1", "[::1]"):
            with urllib.request.urlopen(f"http://{host}:{port}/api/state", timeout=10) as answer:
                self.assertEqual(json.load(answer)["role"], "serve", host)
        serve.stop_cleanly()


def post(port: int, path: str, **headers):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST",
                                     headers={"X-Rpisensor": "1", **headers})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


class OutputsTests(SynchronousTestCase):
    def test_the_page_switches_serves_outputs_under_its_grants(self):
        """--output: a loopback page holds the grant by default; its switch is a set, seen by query."""
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
                       "--output", "led=12", "--web", "tcp:0")  # fmt: skip
        self.addCleanup(serve.close)
        port = serve.wait_port("tcp:0")
        web = serve.wait_port("tcp:0:interface=127.0.0.1")
        self.assertEqual(get(web, "/api/state")["controls"]["outputs"], [{"name": "led", "on": False}])
        self.assertEqual(post(web, "/api/outputs/led?action=on"), (200, {"output": "led", "text": "led on"}))
        query = run_rpisensor("query", endpoint(port), "outputs")
        self.assertEqual(query.stdout, "led=on\n", query.stderr)
        # The change is a reading in the journal: the page's tile for it.
        wait_until(lambda: any(t["sensor"] == "led" and t["text"] == "on" for t in get(web, "/api/state")["tiles"]))
        self.assertEqual(get(web, "/api/state")["controls"]["outputs"], [{"name": "led", "on": True}])
        self.assertEqual(post(web, "/api/outputs/led?action=off")[1]["text"], "led off")

    def test_without_the_grant_no_switches(self):
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
                       "--output", "led=12", "--control-allow", "192.168.77.0/24", "--web", "tcp:0")  # fmt: skip
        self.addCleanup(serve.close)
        web = serve.wait_port("tcp:0:interface=127.0.0.1")
        self.assertEqual(get(web, "/api/state")["controls"]["outputs"], [])
        code, body = post(web, "/api/outputs/led?action=on")
        self.assertEqual(code, 403)
        self.assertIn("control grant", body["error"])


class TLSTests(SynchronousTestCase):
    def test_the_page_over_https(self):
        """ssl: as for every listener: the page's API over TLS, the certificate checked by the client."""
        import ssl

        pki = write_pki(self.mktemp())
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
                       "--web", f"ssl:0:privateKey={escape(pki.server_key)}:certKey={escape(pki.server_cert)}")  # fmt: skip
        self.addCleanup(serve.close)
        port = int(serve.wait_for(r"Listening on ssl:0:\S+ \(port (\d+)\)").group(1))
        context = ssl.create_default_context(cafile=pki.ca_cert)  # its certificate names 127.0.0.1
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/api/state", context=context, timeout=10) as answer:
            self.assertEqual(json.load(answer)["role"], "serve")
        with self.assertRaises(OSError):  # no plain HTTP there
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10).read()


def metric_samples(port: int) -> dict:
    """C{/metrics} as Prometheus's own parser reads it: C{{(name, labels): value}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }  # fmt: skip


class ReadingsOutTests(SynchronousTestCase):
    def test_serve_counts_the_readings_its_subscribers_get(self):
        serve = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
                       "--web", "tcp:0", "--sim-pattern", "button=0.2,0.2")  # fmt: skip
        self.addCleanup(serve.close)
        port = serve.wait_port("tcp:0")
        web = serve.wait_port("tcp:0:interface=127.0.0.1")
        subscriber = ("rpisensor_readings_out_total", (("to", "subscriber"),))
        self.assertEqual(metric_samples(web)[subscriber], 0)
        poll = Twistd("rpisensor", "poll", "--connect", f"127.0.0.1:{port}", "--subscribe", "--store",
                      "readings.jsonl")  # fmt: skip
        self.addCleanup(poll.close)

        def stored() -> int:
            try:
                with open(f"{poll.directory}/readings.jsonl") as f:
                    return sum(json.loads(line).get("kind") == "reading" for line in f if line.endswith("\n"))
            except FileNotFoundError:
                return 0

        wait_until(lambda: stored() >= 4, describe=poll.log)
        poll.stop_cleanly()
        samples = metric_samples(web)
        # Every reading stored was sent to the subscriber (and counted before it was sent)...
        self.assertGreaterEqual(samples[subscriber], stored())
        # ...and the pages got none: no page was open.
        self.assertEqual(samples.get(("rpisensor_readings_out_total", (("to", "web"),)), 0), 0)


class ReceivingRolesTests(SynchronousTestCase):
    def start(self, *args: str, cwd: str | None = None) -> Twistd:
        twistd = Twistd(*args, cwd=cwd)
        self.addCleanup(twistd.close)
        return twistd

    def test_poll_subscribe_shows_the_servers_stream_with_history_from_its_store(self):
        serve = self.start("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", "tcp:0",
                           "--sim-pattern", "button=0.2,0.2")  # fmt: skip
        port = serve.wait_port("tcp:0")
        poll = self.start("rpisensor", "poll", "--connect", f"127.0.0.1:{port}", "--subscribe",
                          "--store", "readings.sqlite", "--web", "tcp:0")  # fmt: skip
        web = poll.wait_port("tcp:0:interface=127.0.0.1")
        state = wait_until(lambda: (s := get(web, "/api/state"))["tiles"] and s, describe=poll.log)
        self.assertEqual(state["role"], "poll")
        self.assertEqual(state["tiles"][0]["sensor"], "button")
        wait_until(lambda: len(get(web, "/api/readings?window=60")["readings"]) >= 4, describe=poll.log)
        streams = get(web, "/api/state")["health"]["streams"]
        self.assertEqual([(s["connected"], s["peer"]) for s in streams], [(True, f"127.0.0.1:{port}")])
        # The server goes: the page says the link is down.
        serve.stop()
        wait_until(lambda: not get(web, "/api/state")["health"]["streams"][0]["connected"])
        poll.stop_cleanly()
        # Started again, the page's history comes from the store.
        again = self.start("rpisensor", "poll", "--connect", f"127.0.0.1:{port}", "--subscribe",
                           "--store", "readings.sqlite", "--web", "tcp:0", cwd=poll.directory)  # fmt: skip
        web = again.wait_port("tcp:0:interface=127.0.0.1")
        self.assertGreaterEqual(len(get(web, "/api/readings?window=600")["readings"]), 4)

    def test_collect_shows_a_reporters_gap_as_it_is_stored_and_from_its_store_after(self):
        port = free_port()
        report = self.start("rpisensor", "report", "--gpio", "sim", "--connect", f"127.0.0.1:{port}",
                            "--outbox", "none", "--outbox-max", "5", "--max-delay", "1", "--device", "kitchen",
                            "--on-change", "--sim-pattern", "button=0.05,0.05")  # fmt: skip
        report.wait_for("The outbox is full")  # no collector yet: the oldest readings become a gap
        collect = self.start("rpisensor", "collect", "--listen", f"tcp:{port}:interface=127.0.0.1",
                             "--store", "readings.sqlite", "--web", "tcp:0")  # fmt: skip
        web = collect.wait_port("tcp:0:interface=127.0.0.1")

        def kitchen() -> dict | None:
            streams = get(web, "/api/state")["health"]["streams"]
            return next((s for s in streams if s["device"] == "kitchen" and s["gaps"]["count"]), None)

        stream = wait_until(kitchen, describe=collect.log)
        first = stream["gaps"]["latest"][0]
        self.assertEqual((first["from"], first["reason"]), (1, "outbox full"))
        self.assertGreater(first["to"], 1)
        report.stop_cleanly()
        seen = kitchen()["gaps"]
        collect.stop_cleanly()
        # Started again, the gaps come from the store.
        again = self.start("rpisensor", "collect", "--listen", "tcp:0", "--store", "readings.sqlite",
                           "--web", "tcp:0", cwd=collect.directory)  # fmt: skip
        web = again.wait_port("tcp:0:interface=127.0.0.1")
        stored = wait_until(kitchen, describe=again.log)["gaps"]
        # (a gap stored after the page was last read, as the reporter left, would count too)
        self.assertGreaterEqual(stored["count"], seen["count"])
        self.assertIn(seen["latest"][-1], stored["latest"])

    def test_collect_shows_each_reporters_device(self):
        collect = self.start("rpisensor", "collect", "--listen", "tcp:0", "--store", "readings.jsonl",
                             "--web", "tcp:0")  # fmt: skip
        port = collect.wait_port("tcp:0")
        web = collect.wait_port("tcp:0:interface=127.0.0.1")
        for device in ("kitchen", "garage"):
            self.start("rpisensor", "report", "--gpio", "sim", "--connect", f"127.0.0.1:{port}", "--outbox",
                       "none", "--device", device, "--on-change", "--sim-pattern", "button=0.3,0.3")  # fmt: skip
        wait_until(lambda: {t["device"] for t in get(web, "/api/state")["tiles"]} == {"kitchen", "garage"},
                   describe=collect.log)  # fmt: skip
        health = get(web, "/api/state")["health"]
        self.assertEqual(sorted(s["device"] for s in health["streams"] if s["connected"]), ["garage", "kitchen"])
        self.assertEqual(health["connections"], 2)
        readings = get(web, "/api/readings?window=60")["readings"]
        self.assertEqual({r["device"] for r in readings}, {"kitchen", "garage"})
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{web}/api/sim/button?action=press", method="POST",
                headers={"X-Rpisensor": "1"}), timeout=10)  # fmt: skip
        self.assertEqual(caught.exception.code, 403)  # nothing to press on a collector
