"""
Tests for rpisensor.sensing.reader: single flight, one job per input, max-age,
read timeouts counted from when a read begins, readings' times, and how a
failing sensor is logged. Reads run on a L{FakeRunner} with a L{Clock}; a
L{FakeRunner} job that has not run is a read still waiting for a thread.
Tests of a read that hangs in a real thread are in L{tests.test_read_timeouts}.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.interfaces import SensorReadError
from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.sensing.inputs import DEFAULT_INPUT
from rpisensor.sensing.reader import InputReader, ReadTimeout, timed_read
from rpisensor.sensing.sample import UnknownInput
from rpisensor.testing import FakeRunner, inline_runner, simulated_pins
from tests.support import DOOR
from tests.worker_threads import ThreadedClock


def make_reader(max_age=0.0, inputs=(DEFAULT_INPUT, DOOR), backend=None, clock=None, **options):
    if clock is None:
        clock = Clock()
    if backend is None:
        backend = simulated_pins(clock=clock)
    runner = FakeRunner()
    reader = InputReader(backend, list(inputs), runner, clock, max_age=max_age, **options, wall=clock.seconds)
    reader.setup()
    return reader, backend, runner, clock


class ClockedLatencyPins(SimulatedGPIO):
    """
    Simulated pins whose every read takes C{seconds} of the test's L{Clock}:
    the read advances the clock, so timers due meanwhile fire while it runs,
    as they would in the reactor while a worker thread reads. C{during}, if
    set, is called at the end of that time, before the read returns.
    """

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__(clock=clock)
        self.clock = clock
        self.seconds = seconds
        self.during = None
        #: (channel, clock time the read began) of every read.
        self.began: list[tuple[int, float]] = []

    def read(self, channel: int) -> bool:
        self.began.append((channel, self._now()))
        self.clock.advance(self.seconds)
        if self.during is not None:
            self.during()
        return super().read(channel)


class OneBrokenPin(SimulatedGPIO):
    """Simulated pins where reads of C{channel} fail, and only those."""

    def __init__(self, channel: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.broken = channel

    def read(self, channel: int) -> bool:
        if channel == self.broken:
            raise SensorReadError(f"channel {channel} does not answer")
        return super().read(channel)


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
        self.assertEqual((reader.jobs, reader.reads), (1, 1))

    def test_one_job_per_input(self):
        """Two inputs asked for in one turn are two pool jobs, each reading its own pin."""
        reader, backend, runner, clock = make_reader()
        button, door = reader.read("button"), reader.read("door")
        self.assertEqual([job.args[1] for job in runner.jobs], [24, 18])
        self.assertEqual((reader.jobs, reader.reads), (2, 0))  # handed out, not begun
        runner.run_all()
        self.assertEqual(self.successResultOf(button).text, "Button released")
        self.assertEqual(self.successResultOf(door).text, "closed")
        self.assertEqual((reader.jobs, reader.reads), (2, 2))

    def test_other_input_answered_while_one_waits(self):
        """An input whose read returns is answered while another's read has not returned."""
        reader, backend, runner, clock = make_reader()
        button, door = reader.read("button"), reader.read("door")
        [button_job] = [job for job in runner.jobs if job.args[1] == 24]
        [door_job] = [job for job in runner.jobs if job.args[1] == 18]
        door_job.run()
        self.assertEqual(self.successResultOf(door).text, "closed")
        self.assertNoResult(button)
        button_job.run()
        self.assertEqual(self.successResultOf(button).text, "Button released")

    def test_request_after_read_gets_fresh_read(self):
        """With the default max-age of 0, a request after a read finished reads again."""
        reader, backend, runner, clock = make_reader()
        first = reader.read("button")
        runner.run_all()
        backend.pin(24).drive_low()
        second = reader.read("button")
        runner.run_all()
        self.assertEqual(self.successResultOf(first).text, "Button released")
        self.assertEqual(self.successResultOf(second).text, "Button pressed")
        self.assertEqual(backend.reads, 2)

    def test_failure_fails_every_waiter(self):
        """A read that fails fails every request waiting on it, with the backend's message."""
        reader, backend, runner, clock = make_reader()
        waiting = [reader.read("button") for _ in range(3)]
        backend.fail_reads("sensor unplugged")
        runner.run_all()
        messages = [str(self.failureResultOf(d, SensorReadError).value) for d in waiting]
        self.assertEqual(messages, ["sensor unplugged"] * 3)
        self.assertEqual(backend.reads, 1)

    def test_failing_input_keeps_the_others(self):
        """An input whose reads fail does not fail the other input read with it."""
        clock = Clock()
        reader, backend, runner, clock = make_reader(backend=OneBrokenPin(24, clock=clock), clock=clock)
        button, door = reader.read("button"), reader.read("door")
        runner.run_all()
        error = self.failureResultOf(button, SensorReadError)
        self.assertEqual(str(error.value), "channel 24 does not answer")
        self.assertEqual(self.successResultOf(door).text, "closed")

    def test_unknown_input(self):
        """Asking for an input that does not exist names the inputs that do."""
        reader, _, _, _ = make_reader()
        error = self.assertRaises(UnknownInput, reader.read, "window")
        self.assertIn("button, door", str(error))


class ReadingTimeTests(SynchronousTestCase):
    def test_time_is_when_the_pin_was_read(self):
        """A reading carries the time the worker read the pin, not when the reactor got it."""
        reader, backend, runner, clock = make_reader()
        clock.advance(100)
        waiting = reader.read("button")
        [job] = runner.jobs
        clock.advance(3)
        result = job.f(*job.args)  # the worker reads at 103...
        clock.advance(2)
        job.deferred.callback(result)  # ...and the reactor hears of it at 105
        self.assertEqual(self.successResultOf(waiting).time, 103.0)

    def test_timed_read_reports_its_start(self):
        """timed_read says when it begins, then returns the level and when it was read."""
        clock = Clock()
        backend = ClockedLatencyPins(clock, seconds=0.25)
        backend.setup_input(24, "up")
        began = []
        self.assertEqual(timed_read(backend, 24, clock.seconds, began.append), (True, 0.25))
        self.assertEqual(began, [0.0])


class MaxAgeTests(SynchronousTestCase):
    def test_served_from_cache_within_age(self):
        """Within max-age a finished reading is served again without a read."""
        reader, backend, runner, clock = make_reader(max_age=0.5)
        reader.read("button")
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
        runner.run_all()
        clock.advance(0.6)
        backend.pin(24).drive_low()
        fresh = reader.read("button")
        self.assertNoResult(fresh)
        runner.run_all()
        self.assertEqual(self.successResultOf(fresh).text, "Button pressed")
        self.assertEqual(backend.reads, 2)

    def test_age_counts_from_the_read(self):
        """max-age counts from when the pin was read, not from when the result arrived."""
        reader, backend, runner, clock = make_reader(max_age=0.5)
        reader.read("button")
        [job] = runner.jobs
        result = job.f(*job.args)  # read at 0
        clock.advance(0.4)
        job.deferred.callback(result)  # delivered at 0.4
        clock.advance(0.2)  # 0.6 s after the read: too old
        self.assertNoResult(reader.read("button"))
        self.assertEqual(len(runner.jobs), 2)


class ReadTimeoutTests(SynchronousTestCase):
    def make(self, seconds: float, read_timeout: float):
        clock = Clock()
        self.lent = []
        backend = ClockedLatencyPins(clock, seconds)
        return make_reader(
            backend=backend, clock=clock, read_timeout=read_timeout, on_stuck=self.lent.append
        )

    def test_time_waiting_for_a_thread_does_not_count(self):
        """A read that no thread has begun yet never times out, however long it waits."""
        reader, backend, runner, clock = make_reader(read_timeout=5.0)
        waiting = reader.read("button")
        clock.advance(0)
        clock.advance(60)
        self.assertNoResult(waiting)
        self.assertEqual(reader.stuck, {})
        runner.run_all()
        self.assertEqual(self.successResultOf(waiting).text, "Button released")

    def test_slow_read_queued_behind_another_is_not_a_timeout(self):
        """With one thread, a 0.75 s read behind another 0.75 s one is answered (timeout 1 s)."""
        reader, backend, runner, clock = self.make(seconds=0.75, read_timeout=1.0)
        button, door = reader.read("button"), reader.read("door")
        runner.run_all()  # one after the other, as in a one-thread pool
        self.assertEqual(backend.began, [(24, 0.0), (18, 0.75)])
        self.assertEqual(self.successResultOf(button).text, "Button released")
        self.assertEqual(self.successResultOf(door).text, "closed")
        self.assertEqual((reader.stuck, self.lent), ({}, []))

    def test_read_running_too_long_times_out(self):
        """A read that runs past the timeout fails its waiters; its input is stuck until it returns."""
        reader, backend, runner, clock = self.make(seconds=6.0, read_timeout=5.0)
        stuck_seen = []
        waiting = reader.read("button")
        waiting.addErrback(lambda f: (stuck_seen.append(dict(reader.stuck)), f)[1])
        runner.run_all()
        error = self.failureResultOf(waiting, ReadTimeout)
        self.assertEqual(str(error.value), "reading button took more than 5 s")
        self.assertEqual(stuck_seen, [{"button": 0.0}])  # stuck while the read still ran
        self.assertEqual(self.lent, [1, -1])  # a thread lent, and given back when it returned
        self.assertEqual(reader.stuck, {})
        self.assertEqual(reader.jobs_in_flight, 0)

    def test_stuck_input_fails_at_once(self):
        """While an input's read is stuck, requests for it fail at once saying so, unread."""
        asked_while_stuck = []
        reader, backend, runner, clock = self.make(seconds=7.0, read_timeout=5.0)
        backend.during = lambda: asked_while_stuck.append(reader.read("button"))
        reader.read("button").addErrback(lambda _: None)
        runner.run_all()
        [during] = asked_while_stuck
        error = self.failureResultOf(during, ReadTimeout)
        self.assertEqual(
            str(error.value), "input button is not answering: a read has been running for 7 s"
        )
        self.assertEqual((reader.jobs, backend.reads), (1, 1))  # no second read of a stuck input


class FailureLogTests(SynchronousTestCase):
    """A failing or hung sensor is logged once per failure kind, not per request."""

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self, level=None):
        return [
            e for e in self.events
            if e.get("log_namespace", "").startswith("rpisensor.sensing.reader")
            and (level is None or e["log_level"] == level)
        ]  # fmt: skip

    def test_failing_sensor_logged_once(self):
        """Failed reads with many waiters, again and again, log one warning; recovery one line."""
        reader, backend, runner, clock = make_reader()
        backend.fail_reads("sensor unplugged")
        for _ in range(3):
            for _ in range(10):
                reader.read("button").addErrback(lambda _: None)
            runner.run_all()
        [warning] = self.lines(LogLevel.warn)
        self.assertEqual(warning["name"], "button")
        self.assertEqual(warning["error"], "sensor unplugged")
        backend.fail_reads(None)
        reader.read("button")
        runner.run_all()
        self.assertEqual([e["log_format"] for e in self.lines(LogLevel.info)], ["Input {name} reads again."])
        backend.fail_reads("sensor unplugged again")
        reader.read("button").addErrback(lambda _: None)
        runner.run_all()
        self.assertEqual(len(self.lines(LogLevel.warn)), 2)

    def test_hung_sensor_logged_once(self):
        """A read past its timeout logs one warning, whatever the number of its waiters."""
        clock = Clock()
        reader, backend, runner, clock = make_reader(
            backend=ClockedLatencyPins(clock, seconds=6.0), clock=clock, read_timeout=5.0
        )
        for _ in range(10):
            reader.read("button").addErrback(lambda _: None)
        runner.run_all()
        [warning] = self.lines(LogLevel.warn)
        self.assertIn("may be hung", warning["log_format"])
        self.assertEqual(warning["name"], "button")


class InlineRunnerTests(SynchronousTestCase):
    """A runner that runs jobs at once in the reactor's thread, with a clock that takes calls from threads."""

    def test_start_heard_after_the_end(self):
        """The read's start, queued behind its end, is counted and starts no timer."""
        clock = ThreadedClock()
        reader = InputReader(simulated_pins(clock=clock), [DEFAULT_INPUT], inline_runner, clock, wall=clock.seconds)
        reader.setup()
        reading = self.successResultOf(reader.read("button"))
        self.assertEqual(reading.text, "Button released")
        clock.pump_until(lambda: reader.reads == 1)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(reader.jobs_in_flight, 0)
