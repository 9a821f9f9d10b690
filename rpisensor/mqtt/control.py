"""
Switch commands from MQTT (Home Assistant's switches) to the outputs, only
with C{--mqtt-control}, under the rules a TCP client has: the same rate
limit (C{--control-rate}, per connection), the same log line for every
command, rate-limited by kind, and the same claims (a client that claimed
the outputs keeps them). Each connection to the broker is one driver: when
it ends, every deadman output it drives goes to its safe level at once.

What the switch then shows is what the pin does: its state topic follows the
output's readings in the outbox, written once the level is on the pin.
"""

from __future__ import annotations

from twisted.logger import Logger

from rpisensor.control.controller import ControlError, OutputController
from rpisensor.control.rate import CommandRate
from rpisensor.lograte import RateLimitedLog
from rpisensor.mqtt.messages import command_level

_log = Logger(namespace="rpisensor.control")


class MQTTDriver:
    """Who drives an output from MQTT: one per connection to the broker."""

    def __init__(self, where: str) -> None:
        self.who = f"MQTT ({where})"

    def __repr__(self) -> str:
        return self.who


class MQTTControl:
    """
    Carries out C{ON}/C{OFF} commands for C{controller}'s outputs.

    @param rate: commands a second one connection may send (C{--control-rate}).
    """

    def __init__(self, controller: OutputController, clock, rate: float) -> None:
        self.controller = controller
        self._clock = clock
        self._rate_per_second = rate
        self._log = RateLimitedLog(clock, _log)
        self.driver: MQTTDriver | None = None
        self._rate: CommandRate | None = None

    def connected(self, where: str) -> None:
        self.driver = MQTTDriver(where)
        self._rate = CommandRate(self._clock, self._rate_per_second)

    def lost(self) -> None:
        """The connection ended: its deadmen go safe now."""
        driver, self.driver = self.driver, None
        if driver is not None:
            self.controller.connection_lost(driver)

    def command(self, name: str, payload: bytes) -> None:
        """A message on output C{name}'s command topic."""
        driver = self.driver
        if driver is None:
            return
        named = name if name in self.controller.names else ""  # one kind of line per declared output
        if not self._rate.allow():
            self._log.warn(
                "Too many control commands from {who}: more than {rate:g} a second (--control-rate); "
                "the extra ones are refused.",
                key="control rate", who=driver.who, rate=self._rate.rate,
            )  # fmt: skip
            return
        level = command_level(payload)
        shown = "on" if level else "off" if level is not None else repr(payload[:32])
        self._log.info(
            "Control command from {who}: set {name} {wanted}",
            key=f"control set {named}", who=driver.who, name=name if named else repr(name[:32]), wanted=shown,
        )  # fmt: skip
        if level is None:
            self._log.warn(
                "Refused the command from {who} for {name}: the payload must be ON or OFF, got {payload}.",
                key=f"control payload {named}", who=driver.who, name=name if named else repr(name[:32]),
                payload=shown,
            )  # fmt: skip
            return
        if not named:  # (the topic's name is the sender's: only a short piece of it is logged)
            self._log.warn(
                "Refused the command from {who} for {name}: no such output; outputs are: {outputs}.",
                key="control refused ", who=driver.who, name=repr(name[:32]),
                outputs=", ".join(self.controller.names),
            )  # fmt: skip
            return
        try:
            done = self.controller.set(driver, name, level)
        except ControlError as e:
            self._log.warn(
                "Refused the command from {who}: {error}.", key=f"control refused {named}", who=driver.who, error=str(e)
            )
            return
        done.addErrback(self._failed, driver)

    def _failed(self, failure, driver: MQTTDriver) -> None:
        self._log.warn(
            "The command from {who} was not carried out: {error}.",
            key="control failed", who=driver.who, error=failure.getErrorMessage(),
        )  # fmt: skip

    def flush(self) -> None:
        self._log.flush()
