"""
Outputs through the real C{RPi.GPIO} on an emulated Pi 3 (see
L{tests.emulated_pi}): C{set} lands in the output registers GPSET0/GPCLR0
of the fake C{/dev/gpiomem} (bit N = BCM N), the function select shows the
pin as an output, a deadman expires, and SIGTERM writes the safe level and
returns the pin to input.
"""

from __future__ import annotations

from tests.emulated_pi import GPCLR0, GPSET0, INPUT, OUTPUT
from tests.processes import connect_tcp, request, wait_until
from tests.test_gpio_rpi import EmulatedPiServer

LED_BCM = 18  # BOARD 12
MOTOR_BCM = 23  # BOARD 16


class EmulatedPiOutputTests(EmulatedPiServer):
    """
    The fake registers are plain memory: each write of RPi.GPIO puts one
    word, so GPSET0 and GPCLR0 hold the bit of the last pin driven high or low.
    """

    def bit(self, offset: int, bcm: int) -> bool:
        return bool(self.pi.register(offset) >> bcm & 1)

    def test_set_drives_the_output_registers(self) -> None:
        """Set-up writes the safe level and selects output; set on/off write GPSET0/GPCLR0; SIGTERM: safe, then input."""
        port = self.start_server("--output", "led=12")
        self.assertEqual(self.pi.function(LED_BCM), OUTPUT)
        self.assertTrue(self.bit(GPCLR0, LED_BCM), "the safe level (off) is written at set-up")
        self.assertFalse(self.bit(GPSET0, LED_BCM))
        self.pi.clear_register(GPCLR0)

        self.assertEqual(self.ask(port, b"set led on"), "led on")
        self.assertTrue(self.bit(GPSET0, LED_BCM))
        self.assertFalse(self.bit(GPCLR0, LED_BCM))
        self.pi.clear_register(GPSET0)
        self.assertEqual(self.ask(port, b"set led off"), "led off")
        self.assertTrue(self.bit(GPCLR0, LED_BCM))
        self.assertFalse(self.bit(GPSET0, LED_BCM))

        # SIGTERM with the led on (a latch): the safe level is written, then the pin is an input again.
        self.assertEqual(self.ask(port, b"set led on"), "led on")
        self.assertTrue(self.bit(GPSET0, LED_BCM))
        self.pi.clear_register(GPCLR0)
        self.assertEqual(self.stop_server(), 0, self.log_text())
        self.assertTrue(self.bit(GPCLR0, LED_BCM), "the safe level is written before release")
        self.assertEqual(self.pi.function(LED_BCM), INPUT)
        log = self.log_text()
        self.assertIn("Outputs back to their safe levels, their pins returned to input.", log)
        self.assertNotIn("Traceback", log)

    def test_deadman(self) -> None:
        """A deadman goes low by itself when not renewed, and when its client disconnects."""
        port = self.start_server("--output", "motor=16,ttl=5")
        self.assertEqual(self.pi.function(MOTOR_BCM), OUTPUT)
        self.pi.clear_register(GPCLR0)
        with connect_tcp(port) as client:
            self.assertEqual(request(client, b"set motor on ttl=0.3"), b"motor on\0")
            self.assertTrue(self.bit(GPSET0, MOTOR_BCM))
            wait_until(lambda: self.bit(GPCLR0, MOTOR_BCM), describe=self.log_text)
            self.assertEqual(request(client, b"outputs"), b"motor=off\0")
            self.pi.clear_register(GPCLR0)
            self.assertEqual(request(client, b"set motor on"), b"motor on\0")
        wait_until(lambda: self.bit(GPCLR0, MOTOR_BCM), describe=self.log_text)
        self.assertIn("disconnected", self.log_text())
        self.assertEqual(self.stop_server(), 0, self.log_text())
        self.assertEqual(self.pi.function(MOTOR_BCM), INPUT)
