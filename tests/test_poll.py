"""Tests for rpisensor.poll, with StringTransport and Clock."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.roles.poll.poller import PollFactory


def connect(factory):
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class PollTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.replies = []
        self.factory = PollFactory(self.clock, "go", interval=2.0, timeout=5.0,
                                   on_reply=self.replies.append)  # fmt: skip
        self.protocol, self.transport = connect(self.factory)

    def test_sends_go_at_once_and_every_interval(self):
        """'go' goes out on connect and then every 2 s, once each reply is in."""
        self.assertEqual(self.transport.value(), b"go\0")
        self.protocol.dataReceived(b"Button released\0")
        self.clock.advance(2.0)
        self.assertEqual(self.transport.value(), b"go\0go\0")
        self.assertEqual(self.replies, ["Button released"])

    def test_at_most_one_outstanding(self):
        """While a 'go' is unanswered, no further 'go' is sent."""
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.assertEqual(self.transport.value(), b"go\0")

    def test_timeout_drops_the_link(self):
        """No reply within the timeout aborts the connection, so the client reconnects."""
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_stops_polling_when_disconnected(self):
        """After the connection is lost nothing more is sent and nothing raises."""
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.transport.clear()
        self.clock.advance(10.0)
        self.assertEqual(self.transport.value(), b"")

    def test_custom_command(self):
        """--command changes what is sent."""
        factory = PollFactory(self.clock, "read door")
        _, transport = connect(factory)
        self.assertEqual(transport.value(), b"read door\0")


class ImportTests(SynchronousTestCase):
    def test_package_exports_the_builder(self):
        """The embedding guide's C{rpisensor.roles.poll.build_poll_service} and C{PollSettings} are the role's."""
        import rpisensor.roles.poll
        from rpisensor.roles.poll import service

        self.assertIs(rpisensor.roles.poll.build_poll_service, service.build_poll_service)
        self.assertIs(rpisensor.roles.poll.PollSettings, service.PollSettings)
        with self.assertRaises(AttributeError):
            rpisensor.roles.poll.no_such_thing


class SubscribeOptionsTests(SynchronousTestCase):
    """C{poll --subscribe}, C{--store}, C{--hello-timeout} on the command line."""

    def parse(self, *args: str):
        from rpisensor.roles.poll.options import PollOptions

        options = PollOptions()
        options.parseOptions(["--connect", "192.168.0.17:22000", *args])
        return options

    def assertUsageError(self, *args: str, text: str) -> None:
        from twisted.python import usage

        with self.assertRaises(usage.UsageError) as raised:
            self.parse(*args)
        self.assertIn(text, str(raised.exception))

    def test_defaults(self):
        """Without options: polling, no store, a 3 s hello timeout."""
        options = self.parse()
        self.assertEqual((options["subscribe"], options["store"], options["hello-timeout"]), (0, None, 3.0))

    def test_store_needs_subscribe(self):
        """--store without --subscribe is a usage error that says to add it."""
        self.assertUsageError("--store", "r.sqlite", text="--store needs --subscribe")

    def test_store_suffix(self):
        """--store takes what collect's takes."""
        self.assertUsageError("--subscribe", "--store", "r.txt", text="--store: cannot tell the store format")

    def test_hello_timeout(self):
        """--hello-timeout must be a positive number of seconds."""
        self.assertUsageError("--subscribe", "--hello-timeout", "0", text="--hello-timeout must be more than 0")
        self.assertEqual(self.parse("--subscribe", "--hello-timeout", "5")["hello-timeout"], 5.0)

    def test_service(self):
        """--subscribe --store builds the store and a subscribing client, heartbeat a third of the timeout."""
        from twisted.internet.testing import MemoryReactorClock

        from rpisensor.roles.poll.service import PollService, make_service
        from rpisensor.roles.poll.subscribing import SubscribeFactory

        path = self.mktemp() + ".jsonl"
        options = self.parse("--subscribe", "--store", path, "--dead-peer-timeout", "12", "--hello-timeout", "5")
        service = make_service(options, MemoryReactorClock())
        self.assertIsInstance(service, PollService)
        factory = service.factory
        self.assertIsInstance(factory, SubscribeFactory)
        self.assertEqual((factory.heartbeat, factory.hello_timeout, str(factory.store.file.path)), (4.0, 5.0, path))
        plain = make_service(self.parse("--subscribe"), MemoryReactorClock())
        self.assertIsNone(plain.factory.store)

    def test_builder_refuses_a_store_without_subscribe(self):
        """The embedding API says so too."""
        from twisted.internet.testing import MemoryReactorClock

        from rpisensor.roles.poll.service import PollSettings, build_poll_service

        settings = PollSettings("tcp:host=h:port=1", store="x.db")
        self.assertRaises(ValueError, build_poll_service, MemoryReactorClock(), settings)
        no_stream = PollSettings("tcp:host=h:port=1")
        self.assertRaises(ValueError, build_poll_service, MemoryReactorClock(), no_stream, on_reading=print)
