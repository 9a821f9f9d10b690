"""
Outputs over real loopback TCP with a real read pool thread, through
rpisensor.testing, as a user's trial suite testing a robot program would.
"""

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from rpisensor.control.outputs import OutputSpec
from rpisensor.testing import connect, send_message, start_server, wait_until

MOTOR = OutputSpec("motor", 16, ttl=0.3)


class LoopbackOutputTests(TestCase):
    async def start(self, stop_after=True):
        server = await start_server(reactor=reactor, outputs=[OutputSpec("led", 12), MOTOR])
        if stop_after:
            self.addCleanup(server.stop)
        return server

    async def test_set_through_the_pool(self):
        """set's reply comes once the pool thread has driven the pin."""
        server = await self.start()
        self.assertEqual(await send_message(server.port, "set led on"), "led on")
        self.assertTrue(server.output("led"))
        self.assertEqual(await send_message(server.port, "outputs"), "led=on motor=off")

    async def test_deadman_on_the_reactor(self):
        """Renewed, the motor stays on; not renewed, the reactor's timer turns it off."""
        server = await self.start()
        client = await connect(server.port)
        self.addCleanup(client.transport.loseConnection)
        self.assertEqual(await client.request("set motor on"), "motor on")
        self.assertTrue(server.output("motor"))
        await wait_until(lambda: not server.output("motor"), reactor)
        self.assertEqual(await client.request("outputs"), "led=off motor=off")

    async def test_stop_releases_the_pins(self):
        server = await self.start(stop_after=False)
        self.assertEqual(await send_message(server.port, "set led on"), "led on")
        await server.stop()
        self.assertEqual(server.backend.released_outputs, {12, 16})
        self.assertFalse(server.output("led"))
