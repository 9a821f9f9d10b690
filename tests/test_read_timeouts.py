"""
Reads that hang in a real thread of the read pool: the other inputs and the
other clients are still answered, a read queued behind a hung one is done,
and stopping the pool neither waits for a stuck read nor polls.

The pool's threads are real; time is a L{ThreadedClock} the test advances,
so every timeout fires exactly when the test says (no real-time margins).
"""

from __future__ import annotations

import threading

from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.hw.select import BackendChoice
from rpisensor.hw.simulated import SimulatedGPIO
from rpisensor.sensing.inputs import DEFAULT_INPUT, InputSpec
from rpisensor.sensing.pool import open_reader
from rpisensor.sensing.reader import ReadTimeout
from rpisensor.roles.serve.service import SensorServerFactory
from rpisensor.testing import simulated_pins
from tests.support import DOOR, replies
from tests.worker_threads import HangingPin, ThreadedClock

TIMEOUT = 5.0


class HungReadTestCase(SynchronousTestCase):
    """A one-thread read pool on real threads, timed by a L{ThreadedClock}."""

    def start_pool(self, backend=None, inputs=(DEFAULT_INPUT, DOOR), **options):
        self.clock = ThreadedClock()
        self.backend = backend if backend is not None else HangingPin(DEFAULT_INPUT.pin, clock=self.clock)
        self.reader, self.pool = open_reader(
            self.clock, self.backend, list(inputs), read_timeout=TIMEOUT, wall=self.clock.seconds, **options
        )
        self.pool.startService()
        self.addCleanup(self.stop_pool)
        return self.reader

    def stop_pool(self) -> None:
        if not self.pool.running:
            return
        if isinstance(self.backend, HangingPin):
            self.backend.release()
        self.clock.pump_until(lambda: self.reader.jobs_in_flight == 0)
        stopped = self.pool.stopService()
        self.clock.pump_until(lambda: stopped.called)

    def wait_until_hung(self) -> None:
        """Until the hung read has begun and the reactor knows (its timer runs)."""
        self.clock.pump_until(lambda: self.backend.hung.is_set() and self.clock.getDelayedCalls())


class HungInputTests(HungReadTestCase):
    def test_hung_input_does_not_silence_the_others(self):
        """A hung button does not make the door stuck: it is answered, now and later."""
        reader = self.start_pool()
        button, door = reader.read("button"), reader.read("door")
        self.wait_until_hung()
        self.clock.advance(TIMEOUT)
        self.failureResultOf(button, ReadTimeout)
        self.clock.pump_until(lambda: door.called)
        self.assertEqual(self.successResultOf(door).text, "closed")
        self.assertEqual(list(reader.stuck), ["button"])
        again = reader.read("door")
        self.clock.pump_until(lambda: again.called)
        self.assertEqual(self.successResultOf(again).text, "closed")

    def test_read_queued_behind_a_hung_read_is_answered(self):
        """With one thread, a read queued behind a hung one gets the lent thread and is done."""
        reader = self.start_pool()
        button = reader.read("button")
        self.wait_until_hung()
        door = reader.read("door")  # waits for the only thread
        self.clock.advance(TIMEOUT - 0.1)
        self.assertNoResult(button)
        self.clock.advance(0.1)  # the hung read times out; its thread is lent
        self.failureResultOf(button, ReadTimeout)
        self.clock.pump_until(lambda: door.called)
        self.assertEqual(self.successResultOf(door).text, "closed")
        self.assertFalse(self.backend.released)  # all while the button's read still hangs

    def test_stuck_read_returns(self):
        """Once the hung read returns, its input is read again and the lent thread goes back."""
        reader = self.start_pool()
        reader.read("button").addErrback(lambda _: None)
        self.wait_until_hung()
        self.clock.advance(TIMEOUT)
        self.assertEqual(self.pool.pool.max, 2)
        self.backend.release()
        self.clock.pump_until(lambda: not reader.stuck)
        self.assertEqual(self.pool.pool.max, 1)
        again = reader.read("button")
        self.clock.pump_until(lambda: again.called)
        self.assertEqual(self.successResultOf(again).text, "Button released")


class ServerWithHungReadTests(HungReadTestCase):
    """The server's replies while a read hangs (was a 0.3 s real-reactor test)."""

    def connect(self, factory, port):
        address = IPv4Address("TCP", "127.0.0.1", port)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_hung_read_times_out_and_others_are_answered(self):
        """A hung read gets an error reply after the timeout; other clients and inputs are answered."""
        door = InputSpec("door", 18, active_text="Door open", inactive_text="Door closed")
        reader = self.start_pool(inputs=(DEFAULT_INPUT, door))
        factory = SensorServerFactory(reader)
        first, first_out = self.connect(factory, 40001)
        second, second_out = self.connect(factory, 40002)
        first.dataReceived(b"go\0")
        self.wait_until_hung()
        second.dataReceived(b"ping\0")  # while the read hangs, another client is answered
        self.assertEqual(replies(second_out), [b"pong"])
        self.assertEqual(replies(first_out), [])
        self.clock.advance(TIMEOUT)
        self.assertEqual(replies(first_out), [b"error: reading failed: reading button took more than 5 s"])
        self.clock.advance(2)
        first.dataReceived(b"go\0")  # still hung: an error at once, and the door is read
        self.assertEqual(
            replies(first_out),
            [b"error: reading failed: input button is not answering: a read has been running for 7 s"],
        )
        second.dataReceived(b"read door\0")
        self.clock.pump_until(lambda: second_out.value())
        self.assertEqual(replies(second_out), [b"Door closed"])
        self.backend.release()
        self.clock.pump_until(lambda: not reader.stuck)
        first.dataReceived(b"go\0")
        self.clock.pump_until(lambda: first_out.value())
        self.assertEqual(replies(first_out), [b"Button released"])

    def test_read_failure_logged_once_for_all_clients(self):
        """A failed read waited on by three clients logs one warning, not one per client."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reader = self.start_pool(backend=simulated_pins(clock=ThreadedClock()))
        self.backend.fail_reads("the sensor is unplugged")
        factory = SensorServerFactory(reader)
        clients = [self.connect(factory, 40000 + n) for n in range(3)]
        for protocol, _ in clients:
            protocol.dataReceived(b"go\0")
        self.clock.pump_until(lambda: all(out.value() for _, out in clients))
        for _, out in clients:
            self.assertEqual(replies(out), [b"error: reading failed: the sensor is unplugged"])
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertEqual(warnings[0]["error"], "the sensor is unplugged")


class StopTests(HungReadTestCase):
    """Stopping the pool: event-driven, not waiting for stuck reads, cleanup in a pool thread."""

    def test_stop_does_not_wait_for_a_stuck_read(self):
        """A read already stuck past its timeout is not waited for: stop ends at once."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reader = self.start_pool()
        reader.read("button").addErrback(lambda _: None)
        self.wait_until_hung()
        self.clock.advance(TIMEOUT)
        stopped = self.pool.stopService()
        self.successResultOf(stopped)  # no time passed, nothing pumped
        self.assertEqual(self.backend.cleanup_threads, [])  # not while a read runs in the driver
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn and "names" in e]
        self.assertEqual(warning["names"], "button")
        self.backend.release()
        self.clock.pump_until(lambda: not reader.jobs_in_flight)

    def test_stop_waits_for_a_running_read_then_cleans_up_in_a_pool_thread(self):
        """Stop waits for a read still within its timeout, then releases the pins off the reactor."""
        reader = self.start_pool()
        button = reader.read("button")
        self.wait_until_hung()
        stopped = self.pool.stopService()
        self.assertNoResult(stopped)
        self.backend.release()
        self.clock.pump_until(lambda: stopped.called)
        self.successResultOf(stopped)
        self.assertEqual(self.successResultOf(button).text, "Button released")
        [thread] = self.backend.cleanup_threads
        self.assertIsNot(thread, threading.current_thread())
        self.assertIn("rpisensor-reads", thread.name)
        self.assertEqual(self.backend.set_up_channels, frozenset())
        self.assertFalse(self.pool.pool.started)

    def test_cleanup_runs_in_a_pool_thread(self):
        """Releasing the channels may block, so it runs in a read thread, not the reactor's."""
        self.start_pool()
        self.backend.release()
        stopped = self.pool.stopService()
        self.clock.pump_until(lambda: stopped.called)
        [thread] = self.backend.cleanup_threads
        self.assertIsNot(thread, threading.current_thread())
        self.assertIn("rpisensor-reads", thread.name)

    def test_stop_ends_when_the_running_read_times_out(self):
        """A read that hangs during the stop is waited for only until its timeout."""
        reader = self.start_pool()
        reader.read("button").addErrback(lambda _: None)
        self.wait_until_hung()
        self.clock.advance(1)
        stopped = self.pool.stopService()
        self.clock.advance(TIMEOUT - 1.1)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.backend.release()
        self.clock.pump_until(lambda: not reader.jobs_in_flight)

    def test_failed_cleanup_is_logged(self):
        """A cleanup that raises is logged as one clear error, and the stop still ends."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start_pool(backend=BrokenCleanup())
        stopped = self.pool.stopService()
        self.clock.pump_until(lambda: stopped.called)
        self.successResultOf(stopped)
        [error] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(error["error"], "the GPIO device is gone")
        self.assertFalse(self.pool.pool.started)


class BrokenCleanup(SimulatedGPIO):
    """Simulated pins whose release fails, as a vanished GPIO device would."""

    def cleanup(self) -> None:
        raise OSError("the GPIO device is gone")


class StartLineTests(SynchronousTestCase):
    """One line at start: which pins and why, and every input's wiring."""

    def start(self, backend, inputs, choice):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = ThreadedClock()
        _, pool = open_reader(clock, backend, inputs, backend_choice=choice)
        pool.startService()
        self.addCleanup(pool.pool.stop)  # started with no thread: nothing to wait for
        return [e for e in events if e.get("log_namespace", "").startswith("rpisensor.sensing.pool")]

    def test_inputs_in_both_numberings(self):
        """Each input's name, BOARD and BCM pins, pull and active level, and the backend's reason."""
        lines = self.start(simulated_pins(), [DEFAULT_INPUT, DOOR], BackendChoice("sim", "--gpio sim"))
        [line] = lines
        self.assertEqual(line["log_level"], LogLevel.info)
        self.assertEqual(
            formatEvent(line),
            "Using simulated pins (--gpio sim). Inputs: button on BOARD 24 (BCM 8), pull up, "
            "active low; door on BOARD 18 (BCM 24), pull down, active high.",
        )

    def test_bcm_numbering(self):
        """Inputs given in BCM numbering are shown with their BOARD pin too."""
        lines = self.start(
            simulated_pins(numbering="bcm"), [InputSpec("button", 8)], BackendChoice("sim", "--gpio sim")
        )
        self.assertIn("button on BOARD 24 (BCM 8), pull up, active low", formatEvent(lines[0]))

    def test_fallback_warns(self):
        """Simulated pins because real ones are not available: a warning saying why."""
        choice = BackendChoice("sim", "real GPIO is not available (not a Pi)", fallback=True)
        [line] = self.start(simulated_pins(), [DEFAULT_INPUT], choice)
        self.assertEqual(line["log_level"], LogLevel.warn)
        self.assertTrue(
            formatEvent(line).startswith("Using SIMULATED pins: real GPIO is not available (not a Pi)")
        )
        self.assertIn("Inputs: button on BOARD 24 (BCM 8)", formatEvent(line))

    def test_role_options_give_the_reason(self):
        """A role opened from its options names the --gpio choice in the start line."""
        from rpisensor.roles._inputs import open_inputs
        from tests.test_inputs import parse_role

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        options = parse_role("serve", "--gpio", "sim", "--numbering", "bcm")
        _, pool = open_inputs(options, ThreadedClock())
        pool.startService()
        self.addCleanup(pool.pool.stop)
        [line] = [e for e in events if e.get("log_namespace", "").startswith("rpisensor.sensing.pool")]
        self.assertEqual(
            formatEvent(line),
            "Using simulated pins (--gpio sim). Inputs: button on BOARD 24 (BCM 8), pull up, active low.",
        )
