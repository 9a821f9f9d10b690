"""Tests for rpisensor.server, on StringTransport with a fake read pool."""

from twisted.trial.unittest import SynchronousTestCase

from rpisensor.net.limits import ServerLimits
from rpisensor.roles.serve.commands import HELP_TEXT
from tests.support import ServerHarness, replies



class CommandTests(SynchronousTestCase):
    def setUp(self):
        self.harness = ServerHarness()
        self.protocol, self.transport = self.harness.connect()

    def send(self, data):
        self.protocol.dataReceived(data)
        self.harness.finish_reads()
        return replies(self.transport)

    def test_go_released(self):
        """'go' with the button up gets exactly the tutorial's bytes."""
        self.protocol.dataReceived(b"go\0")
        self.harness.finish_reads()
        self.assertEqual(self.transport.value(), b"Button released\0")

    def test_go_pressed(self):
        """'go' follows the pin: low means pressed."""
        self.harness.backend.pin(24).drive_low()
        self.assertEqual(self.send(b"go\0"), [b"Button pressed"])

    def test_go_waits_for_read(self):
        """No reply is written before the read finishes."""
        self.protocol.dataReceived(b"go\0")
        self.harness.clock.advance(0)
        self.assertEqual(self.transport.value(), b"")
        self.harness.runner.run_all()
        self.assertEqual(replies(self.transport), [b"Button released"])

    def test_read_name(self):
        """'read NAME' answers with that input's text."""
        self.assertEqual(self.send(b"read door\0"), [b"closed"])

    def test_list_ping_help(self):
        """'list', 'ping' and 'help' answer at once."""
        self.assertEqual(self.send(b"list\0ping\0help\0"),
                         [b"button door", b"pong", HELP_TEXT.encode()])  # fmt: skip

    def test_whitespace_and_case(self):
        """Stray whitespace, CR/LF and capitals around a command are tolerated."""
        self.assertEqual(self.send(b" GO \r\n\0"), [b"Button released"])

    def test_unknown_command_keeps_connection(self):
        """An unknown command gets one error naming it; the connection stays usable."""
        self.assertEqual(self.send(b"jump\0"), [b"error: unknown command 'jump'; send 'help' for the list"])
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.send(b"ping\0"), [b"pong"])

    def test_bad_arguments(self):
        """Wrong arguments get a usage error, not a crash."""
        self.assertEqual(
            self.send(b"read\0go now\0read window\0"),
            [b"error: usage: read NAME (send 'list' for the names)",
             b"error: go takes no arguments",
             b"error: no input named 'window'; inputs are: button, door"],
        )  # fmt: skip

    def test_empty_messages_ignored(self):
        """Empty messages get no reply and do not disturb the next command."""
        self.assertEqual(self.send(b"\0\0\0ping\0"), [b"pong"])

    def test_invalid_utf8(self):
        """Invalid UTF-8 gets an error reply; the following 'go' is answered."""
        got = self.send(b"\xff\0go\0")
        self.assertEqual(len(got), 2)
        self.assertTrue(got[0].startswith(b"error: message is not valid UTF-8"))
        self.assertEqual(got[1], b"Button released")

    def test_read_failure_is_an_error_reply(self):
        """A failing sensor read gets an 'error:' reply and the connection stays open."""
        self.harness.backend.fail_reads("probe unplugged")
        self.assertEqual(self.send(b"go\0"), [b"error: reading failed: probe unplugged"])
        self.assertFalse(self.transport.disconnecting)

    def test_replies_in_command_order(self):
        """A 'ping' after a pending 'go' is answered after it, so replies match commands."""
        self.protocol.dataReceived(b"go\0ping\0")
        self.harness.clock.advance(0)
        self.assertEqual(self.transport.value(), b"")
        self.harness.runner.run_all()
        self.assertEqual(replies(self.transport), [b"Button released", b"pong"])

    def test_too_long_closes(self):
        """A command longer than the limit closes the connection."""
        harness = ServerHarness(limits=ServerLimits(max_message_bytes=8))
        protocol, transport = harness.connect()
        protocol.dataReceived(b"ping\0" + b"x" * 9)
        self.assertEqual(replies(transport), [b"pong"])
        self.assertTrue(transport.disconnecting)


class ConnectionTests(SynchronousTestCase):
    def test_many_clients_share_reads(self):
        """Two clients' 'go' in one turn are answered from one read."""
        harness = ServerHarness()
        (p1, t1), (p2, t2) = harness.connect(), harness.connect()
        p1.dataReceived(b"go\0")
        p2.dataReceived(b"go\0")
        harness.finish_reads()
        self.assertEqual(harness.backend.reads, 1)
        self.assertEqual(replies(t1), [b"Button released"])
        self.assertEqual(replies(t2), [b"Button released"])

    def test_failed_read_answers_every_waiter_with_error(self):
        """A read that fails gives every client waiting on it an 'error:' reply, from one read."""
        harness = ServerHarness()
        clients = [harness.connect() for _ in range(3)]
        for protocol, _ in clients:
            protocol.dataReceived(b"go\0")
        harness.backend.fail_reads("probe unplugged")
        harness.finish_reads()
        self.assertEqual(harness.backend.reads, 1)
        for _, transport in clients:
            self.assertEqual(replies(transport), [b"error: reading failed: probe unplugged"])
            self.assertFalse(transport.disconnecting)

    def test_connections_tracked(self):
        """The factory knows its open connections."""
        harness = ServerHarness()
        protocol, transport = harness.connect()
        self.assertIn(protocol, harness.factory.connections)
        protocol.connectionLost(None)
        self.assertNotIn(protocol, harness.factory.connections)

    def test_reply_after_disconnect_is_dropped(self):
        """A read finishing after the client left writes nothing and raises nothing."""
        harness = ServerHarness()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"go\0")
        transport.loseConnection()
        protocol.connectionLost(None)
        harness.finish_reads()
        self.assertEqual(transport.value(), b"")
