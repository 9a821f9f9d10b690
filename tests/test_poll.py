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
        """The README's C{rpisensor.roles.poll.build_poll_service} is the poller's builder."""
        import rpisensor.roles.poll
        from rpisensor.roles.poll import poller

        self.assertIs(rpisensor.roles.poll.build_poll_service, poller.build_poll_service)
        with self.assertRaises(AttributeError):
            rpisensor.roles.poll.no_such_thing
