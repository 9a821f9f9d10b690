"""Tests for rpisensor.collect, with StringTransport, Clock and a fake writer."""

from pathlib import Path

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.roles.collect.collector import build_collect_service
from rpisensor.stream.delivery import Stamp
from rpisensor.net.limits import ListenSettings, ServerLimits
from rpisensor.store import StoreOpenError, StoreService
from tests.full_disk import FullDiskFile
from tests.processes import daemon_child_done, run_twistd
from tests.support import LOOPBACK, CollectorHarness, read_jsonl


class CollectorTests(SynchronousTestCase):
    def test_time_format(self):
        """Times are UTC ISO 8601 with milliseconds and a Z."""
        clock = Clock()
        clock.advance(1764075600.25)
        self.assertEqual(Stamp(clock.seconds)(), "2025-11-25T13:00:00.250Z")

    def test_messages_stored_with_time_and_peer(self):
        """Each whole message is stored with the time and the sender's address."""
        h = CollectorHarness(self)
        protocol, _ = h.connect()
        protocol.dataReceived(b"Button pressed\0Button released\0")
        h.write()
        self.assertEqual(read_jsonl(h.path), [
            {"time": "2025-11-25T13:00:00.250Z", "peer": "192.168.0.17:40000", "message": "Button pressed"},
            {"time": "2025-11-25T13:00:00.250Z", "peer": "192.168.0.17:40000", "message": "Button released"},
        ])  # fmt: skip

    def test_logged_only_after_stored(self):
        """A message is logged as received only once it is written."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = CollectorHarness(self)
        protocol, _ = h.connect()
        protocol.dataReceived(b"Button pressed\0")
        h.clock.advance(0)
        self.assertEqual([e for e in events if e.get("text") == "Button pressed"], [])
        h.runner.run_all()
        self.assertEqual(len([e for e in events if e.get("text") == "Button pressed"]), 1)

    def test_partial_message_never_stored(self):
        """A message cut off by a lost connection (no NUL) is not stored."""
        h = CollectorHarness(self)
        protocol, _ = h.connect()
        protocol.dataReceived(b"Button pressed\0Button rel")
        protocol.connectionLost(Failure(ConnectionLost()))
        h.write()
        self.assertEqual([r["message"] for r in read_jsonl(h.path)], ["Button pressed"])

    def test_many_reporters(self):
        """Several reporters at once are all recorded, each with its own peer."""
        h = CollectorHarness(self)
        for port in (40001, 40002, 40003):
            protocol, _ = h.connect(port)
            protocol.dataReceived(f"from {port}\0".encode())
        h.write()
        peers = {r["peer"]: r["message"] for r in read_jsonl(h.path)}
        self.assertEqual(peers, {f"192.168.0.17:{p}": f"from {p}" for p in (40001, 40002, 40003)})
        self.assertEqual(len(h.factory.connections), 3)

    def test_never_replies(self):
        """Like the tutorial's DataServer3, the collector sends nothing back."""
        h = CollectorHarness(self)
        protocol, transport = h.connect()
        protocol.dataReceived(b"Button pressed\0")
        h.write()
        self.assertEqual(transport.value(), b"")

    def test_without_store_only_logs(self):
        """With no store, each message is logged at once."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = CollectorHarness(self, store=False)
        protocol, _ = h.connect()
        protocol.dataReceived(b"Button pressed\0")
        self.assertEqual(len([e for e in events if e.get("text") == "Button pressed"]), 1)

    def test_store_failure_is_logged(self):
        """A failed write is logged as an error naming the sender and message."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = CollectorHarness(self)
        h.store.file.close()
        h.store.file = FullDiskFile(h.path)  # the disk fills up after the collector started
        h.store.file.open()
        protocol, _ = h.connect()
        protocol.dataReceived(b"Button pressed\0")
        h.write()
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["text"], "Button pressed")
        self.assertEqual(errors[0]["error"], "[Errno 28] No space left on device")

    def test_too_long_message_closes(self):
        """A message over the limit closes that connection and is not stored."""
        h = CollectorHarness(self, limits=ServerLimits(max_message_bytes=10))
        protocol, transport = h.connect()
        protocol.dataReceived(b"ok\0" + b"x" * 11)
        h.write()
        self.assertTrue(transport.disconnecting)
        self.assertEqual([r["message"] for r in read_jsonl(h.path)], ["ok"])

    def test_slow_store_pauses_the_reporter(self):
        """With max-pending messages unwritten, reading pauses; held messages are stored after."""
        h = CollectorHarness(self, limits=ServerLimits(max_pending=2))
        protocol, transport = h.connect()
        protocol.dataReceived(b"a\0b\0c\0d\0")
        self.assertEqual(transport.producerState, "paused")
        h.write()  # a and b written: c and d are delivered, then written
        h.write()
        self.assertEqual([r["message"] for r in read_jsonl(h.path)], ["a", "b", "c", "d"])
        self.assertEqual(transport.producerState, "producing")


class StoreOpeningTests(SynchronousTestCase):
    """collect opens its store when it starts (after twistd daemonizes and drops privileges)."""

    def test_not_opened_when_built(self):
        """Building the service does not create the store; starting it does."""
        path = Path(self.mktemp()) / "readings.sqlite"
        path.parent.mkdir()
        top = build_collect_service(Clock(), str(path), ListenSettings(endpoints=()))
        self.assertFalse(path.exists())
        top.startService()
        self.addCleanup(lambda: self.stop(top))
        self.assertTrue(path.exists())

    def stop(self, top):
        store = next(child for child in top if isinstance(child, StoreService))
        store.pool.stop()  # the writer is idle; the Clock would never fire its stop's Deferred
        store.file.close()

    def test_cannot_open_at_start(self):
        """A store that cannot be opened is refused when starting, in one line naming it."""
        path = Path(self.mktemp()) / "no-such-directory" / "readings.jsonl"
        top = build_collect_service(Clock(), str(path), ListenSettings(endpoints=()))
        error = self.assertRaises(StoreOpenError, top.startService)
        self.assertEqual(
            str(error).splitlines(),
            [f"rpisensor: cannot open the store {path}: its directory {path.absolute().parent} does not exist "
             f"(create it: mkdir -p {path.absolute().parent})"],
        )  # fmt: skip

    def test_sqlite_in_a_missing_directory(self):
        """SQLite's own words ("unable to open database file") are not the reason given: the directory is."""
        path = Path(self.mktemp()) / "no-such-directory" / "readings.sqlite"
        top = build_collect_service(Clock(), str(path), ListenSettings(endpoints=()))
        error = self.assertRaises(StoreOpenError, top.startService)
        self.assertIn(f"its directory {path.absolute().parent} does not exist", str(error))
        self.assertNotIn("unable to open database file", str(error))


class StoreOpeningTwistdTests(SynchronousTestCase):
    """A store that cannot be opened, under twistd in the background (no -n)."""

    def test_daemon_reports_it(self):
        """The daemonizing parent exits non-zero naming the store, and leaves no pid file."""
        directory = Path(self.mktemp())
        directory.mkdir()
        store = "/nonexistent-dir/x.jsonl"
        exited = run_twistd(
            "--logfile=twistd.log", "--pidfile=collect.pid", "rpisensor", "collect",
            "--listen", LOOPBACK, "--store", store, cwd=str(directory),
        )  # fmt: skip
        self.assertNotEqual(exited.code, 0, exited.log)
        self.assertIn(f"cannot open the store {store}", exited.log)
        log = daemon_child_done(directory / "collect.pid", directory / "twistd.log", "cannot open the store")
        [line] = [line for line in log.splitlines() if "cannot open the store" in line]
        self.assertIn("its directory /nonexistent-dir does not exist", line)
        self.assertNotIn("Traceback", log)


class CollectOptionsTests(SynchronousTestCase):
    def test_max_stream_pending(self):
        """--max-stream-pending: 10000 by default, a whole number of at least 1, given to the factory."""
        from twisted.python import usage
        from twisted.internet.testing import MemoryReactorClock

        from rpisensor.roles.collect.collector import make_service
        from rpisensor.roles.collect.options import CollectOptions

        options = CollectOptions()
        options.parseOptions(["--listen", "tcp:0"])
        self.assertEqual(options["max-stream-pending"], 10_000)
        options = CollectOptions()
        options.parseOptions(["--listen", "tcp:0", "--max-stream-pending", "50"])
        self.assertEqual(make_service(options, MemoryReactorClock()).factory.max_stream_pending, 50)
        self.assertRaises(usage.UsageError, CollectOptions().parseOptions, ["--max-stream-pending", "0"])
