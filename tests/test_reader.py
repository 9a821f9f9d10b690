"""Tests for rpisensor.reader: single flight, batching, max-age, the read pool."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.interfaces import SensorReadError
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.pool import ReadPoolService
from rpisensor.sensing.reader import InputReader, read_levels
from rpisensor.sensing.reading import UnknownInput
from rpisensor.testing import FakeRunner, simulated_pins
from tests.support import DOOR



def make_reader(max_age=0.0, inputs=(DEFAULT_INPUT, DOOR)):
    clock = Clock()
    backend = simulated_pins(clock=clock)
    runner = FakeRunner()
    reader = InputReader(backend, list(inputs), runner, clock, max_age=max_age)
    reader.setup()
    return reader, backend, runner, clock


class SingleFlightTests(SynchronousTestCase):
    def test_ten_requests_one_read(self):
        """Ten requests during one pending read cause one read and get ten readings."""
        reader, backend, runner, clock = make_reader()
        waiting = [reader.read("button") for _ in range(10)]
        clock.advance(0)
        self.assertEqual(len(runner.jobs), 1)
        waiting += [reader.read("button") for _ in range(5)]  # while in flight
        clock.advance(0)
        self.assertEqual(len(runner.jobs), 1)
        runner.run_all()
        self.assertEqual(backend.reads, 1)
        texts = [self.successResultOf(d).text for d in waiting]
        self.assertEqual(texts, ["Button released"] * 15)

    def test_two_inputs_one_turn_one_job(self):
        """Requests for two inputs in one reactor turn go to the pool as one job."""
        reader, backend, runner, clock = make_reader()
        button, door = reader.read("button"), reader.read("door")
        self.assertEqual(runner.jobs, [])  # nothing goes out until the turn ends
        clock.advance(0)
        self.assertEqual(len(runner.jobs), 1)
        self.assertEqual(runner.jobs[0].args[1], [24, 18])
        runner.run_all()
        self.assertEqual(self.successResultOf(button).text, "Button released")
        self.assertEqual(self.successResultOf(door).text, "closed")
        self.assertEqual((reader.jobs, reader.reads), (1, 2))

    def test_request_after_read_gets_fresh_read(self):
        """With the default max-age of 0, a request after a read finished reads again."""
        reader, backend, runner, clock = make_reader()
        first = reader.read("button")
        clock.advance(0)
        runner.run_all()
        backend.pin(24).drive_low()
        second = reader.read("button")
        clock.advance(0)
        runner.run_all()
        self.assertEqual(self.successResultOf(first).text, "Button released")
        self.assertEqual(self.successResultOf(second).text, "Button pressed")
        self.assertEqual(backend.reads, 2)

    def test_failure_fails_every_waiter(self):
        """A read that fails fails every request waiting on it, and not the other input."""
        reader, backend, runner, clock = make_reader()
        backend.pin(24)
        waiting = [reader.read("button") for _ in range(3)]
        door = reader.read("door")
        clock.advance(0)
        backend.fail_reads("sensor unplugged")
        runner.run_all()
        for d in waiting:
            self.failureResultOf(d, SensorReadError)
        self.failureResultOf(door, SensorReadError)

    def test_one_failing_input_keeps_the_others(self):
        """read_levels returns a failing pin's exception in place of its level only."""
        backend = simulated_pins()
        backend.setup_input(24, "up")
        results = read_levels(backend, [24, 18])
        self.assertEqual(results[0], True)
        self.assertIsInstance(results[1], Exception)

    def test_unknown_input(self):
        """Asking for an input that does not exist names the inputs that do."""
        reader, _, _, _ = make_reader()
        error = self.assertRaises(UnknownInput, reader.read, "window")
        self.assertIn("button, door", str(error))


class MaxAgeTests(SynchronousTestCase):
    def test_served_from_cache_within_age(self):
        """Within max-age a finished reading is served again without a read."""
        reader, backend, runner, clock = make_reader(max_age=0.5)
        reader.read("button")
        clock.advance(0)
        runner.run_all()
        clock.advance(0.4)
        cached = reader.read("button")
        self.assertEqual(self.successResultOf(cached).text, "Button released")
        self.assertEqual(runner.jobs, [])
        self.assertEqual(backend.reads, 1)

    def test_fresh_read_after_age(self):
        """Past max-age, a request waits for a fresh read."""
        reader, backend, runner, clock = make_reader(max_age=0.5)
        reader.read("button")
        clock.advance(0)
        runner.run_all()
        clock.advance(0.6)
        backend.pin(24).drive_low()
        fresh = reader.read("button")
        self.assertNoResult(fresh)
        clock.advance(0)
        runner.run_all()
        self.assertEqual(self.successResultOf(fresh).text, "Button pressed")
        self.assertEqual(backend.reads, 2)


class ReaderServiceTests(SynchronousTestCase):
    def test_stop_releases_channels(self):
        """Stopping the service stops its pool and releases the channels it set up."""
        from twisted.internet import reactor

        backend = simulated_pins()
        service = ReadPoolService(reactor)
        reader = InputReader(backend, [DEFAULT_INPUT], service.runner, reactor)
        reader.setup()
        service.attach(reader)
        service.startService()
        self.assertEqual(backend.set_up_channels, {24})
        service.stopService()
        self.assertEqual(backend.set_up_channels, frozenset())
        self.assertFalse(service.pool.started)

    def test_pool_is_dedicated_and_bounded(self):
        """The read pool is its own, not the reactor's, and has the asked-for size."""
        from twisted.internet import reactor

        service = ReadPoolService(reactor, threads=2)
        self.assertEqual(service.pool.max, 2)
        self.assertIsNot(service.pool, reactor.getThreadPool())


class ReadTimeoutTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.backend = simulated_pins(clock=self.clock)
        self.runner = FakeRunner()
        self.lent = []
        self.reader = InputReader(self.backend, [DEFAULT_INPUT, DOOR], self.runner, self.clock,
                                  read_timeout=5.0, on_stuck=self.lent.append)  # fmt: skip
        self.reader.setup()

    def test_hung_read_fails_waiters_after_timeout(self):
        """Requests waiting on a read that hangs get ReadTimeout after read_timeout seconds."""
        from rpisensor.sensing.reader import ReadTimeout

        waiting = self.reader.read("button")
        self.clock.advance(0)
        self.clock.advance(4.9)
        self.assertNoResult(waiting)
        self.clock.advance(0.2)
        self.failureResultOf(waiting, ReadTimeout)
        self.assertEqual(self.lent, [1])  # the pool lends a thread for the other inputs

    def test_stuck_input_fails_fast_others_still_read(self):
        """While a read is stuck, its input fails at once and other inputs are still read."""
        from rpisensor.sensing.reader import ReadTimeout

        first = self.reader.read("button")
        self.clock.advance(0)
        stuck_job = self.runner.jobs.pop()
        self.clock.advance(6.0)
        self.failureResultOf(first, ReadTimeout)
        error = self.failureResultOf(self.reader.read("button"), ReadTimeout)
        self.assertIn("not answering", str(error.value))
        door = self.reader.read("door")
        self.clock.advance(0)
        self.runner.run_all()
        self.assertEqual(self.successResultOf(door).text, "closed")
        stuck_job.run()  # the hung read finally returns
        self.assertEqual(self.lent, [1, -1])
        self.assertEqual(self.reader.stuck, {})
        again = self.reader.read("button")
        self.clock.advance(0)
        self.runner.run_all()
        self.assertEqual(self.successResultOf(again).text, "Button released")

    def test_lend_thread_grows_the_pool(self):
        """The read service grows its pool by one per stuck read and shrinks it back."""
        from twisted.internet import reactor

        service = ReadPoolService(reactor, threads=1)
        service.lend_thread(+1)
        self.assertEqual(service.pool.max, 2)
        service.lend_thread(-1)
        self.assertEqual(service.pool.max, 1)
