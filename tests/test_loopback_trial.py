"""
The server over real loopback TCP, written as trial TestCases with
rpisensor.testing, as a user's trial suite would be.
"""

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from rpisensor.sensing.inputs import DEFAULT_INPUT, InputSpec
from rpisensor.testing import connect, send_message, start_server

DOOR = InputSpec("door", 18, pull="down", active_low=False, active_text="Door open",
                 inactive_text="Door closed")  # fmt: skip


class LoopbackServerTests(TestCase):
    async def start(self, **options):
        server = await start_server(reactor=reactor, **options)
        self.addCleanup(server.stop)
        return server

    async def test_two_clients_at_once(self):
        """Two clients connected at the same time are both answered (tcpcom allows one)."""
        server = await self.start()
        first, second = await connect(server.port), await connect(server.port)
        self.addCleanup(first.transport.loseConnection)
        self.addCleanup(second.transport.loseConnection)
        server.pin("button").drive_low()
        self.assertEqual(await second.request("go"), "Button pressed")
        self.assertEqual(await first.request("go"), "Button pressed")
        self.assertEqual(len(server.factory.connections), 2)

    async def test_pipelined_commands(self):
        """Commands sent back to back on one connection are answered in order."""
        server = await self.start(inputs=[DEFAULT_INPUT, DOOR])
        client = await connect(server.port)
        self.addCleanup(client.transport.loseConnection)
        server.pin("door").drive_high()
        replies = [client.request(text) for text in ("go", "read door", "list", "ping")]
        self.assertEqual(
            [await reply for reply in replies],
            ["Button released", "Door open", "button door", "pong"],
        )

    async def test_send_message_helper(self):
        """send_message connects, sends, returns the reply and closes."""
        server = await self.start()
        self.assertEqual(await send_message(server.port, "ping"), "pong")
