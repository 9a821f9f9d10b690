"""
C{serve}'s control commands (C{set}, C{pulse}, C{pwm}, C{stop}, C{claim},
C{release}, and C{outputs} for everyone who may read), and the service that
puts every output in its safe state when C{serve} stops, and records every
output change in the journal so that subscribers see it.
"""

from __future__ import annotations

import math

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rpisensor.control.controller import ControlError, OutputController
from rpisensor.control.outputs import Level, OutputSpec, describe_outputs
from rpisensor.roles.serve.registry import Command, Permission
from rpisensor.stream.identity import ClockState
from rpisensor.entries import Reading
from rpisensor.stream.journal_service import JournalService
from rpisensor.wire.v2 import format_timestamp

#: Control commands a connection may send per second by default (C{--control-rate}).
DEFAULT_CONTROL_RATE = 20.0

_log = Logger(namespace="rpisensor.control")


def refusal(connection, verb: str) -> str:
    """The reply to a control command from a client that may not drive outputs."""
    factory = connection.factory
    factory.control_log.info(
        "Refused {verb} from {who}: it has no control grant (--control-allow, --control-cert).",
        key="control refused", verb=verb, who=connection.who,
    )  # fmt: skip
    return (
        f"error: {verb}: this client may not drive outputs (it may still read); the server "
        "grants control with --control-allow CIDR or, over mutual TLS, --control-cert CN"
    )


def _admit(connection, verb: str, args: list[str]) -> OutputController | None:
    """The controller, once the command passed the rate limit and was logged; else reply and None."""
    gate = connection.factory.gate
    if connection.control_bucket is None:
        connection.control_bucket = gate.bucket()
    refusal = gate.admit(connection.control_bucket, connection, verb, args)
    if refusal is not None:
        connection.reply(f"error: {refusal}")
        return None
    return connection.factory.controller


def _carry_out(connection, action) -> None:
    try:
        outcome = action()
    except ControlError as e:
        connection.reply(f"error: {e}")
        return
    if isinstance(outcome, Deferred):
        connection.reply_when(outcome)
    else:
        connection.reply(outcome)


def _ttl_argument(verb: str, args: list[str]) -> float | None:
    if len(args) < 3:
        return None
    key, sep, value = args[2].partition("=")
    if key.lower() != "ttl" or not sep:
        raise ControlError(f"{verb}: expected ttl=SECONDS after the level, got {args[2]!r}")
    return _number(value, f"{verb}: ttl")


def _number(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ControlError(f"{what} must be a number, got {text!r}")
    return number


def _set(connection, args: list[str]) -> None:
    controller = _admit(connection, "set", args)
    if controller is None:
        return

    def action():
        level = args[1].lower()
        if level not in ("on", "off"):
            raise ControlError(f"set: the level is on or off, got {args[1]!r}")
        return controller.set(connection, args[0], level == "on", _ttl_argument("set", args))

    _carry_out(connection, action)


def _pulse(connection, args: list[str]) -> None:
    controller = _admit(connection, "pulse", args)
    if controller is not None:
        _carry_out(connection, lambda: controller.pulse(connection, args[0], _number(args[1], "pulse: MS")))


def _pwm(connection, args: list[str]) -> None:
    controller = _admit(connection, "pwm", args)
    if controller is None:
        return

    def action():
        duty = _number(args[1].rstrip("%"), "pwm: DUTY")
        return controller.pwm(connection, args[0], duty, _ttl_argument("pwm", args))

    _carry_out(connection, action)


def _stop(connection, args: list[str]) -> None:
    controller = _admit(connection, "stop", args)
    if controller is not None:
        _carry_out(connection, lambda: controller.stop(connection))


def _claim(connection, args: list[str]) -> None:
    controller = _admit(connection, "claim", args)
    if controller is not None:
        _carry_out(connection, lambda: controller.claim(connection))


def _release(connection, args: list[str]) -> None:
    controller = _admit(connection, "release", args)
    if controller is not None:
        _carry_out(connection, lambda: controller.release(connection))


def _outputs(connection, args: list[str]) -> None:
    connection.reply(connection.factory.controller.states())


CONTROL_COMMANDS = (
    Command("set", "set NAME on|off [ttl=SECONDS]", "drive an output", _set, arguments=(2, 3),
            permission=Permission.CONTROL, hint="send 'outputs' for the names"),
    Command("pulse", "pulse NAME MS", "an output off its safe level for MS milliseconds", _pulse,
            arguments=(2, 2), permission=Permission.CONTROL),
    Command("pwm", "pwm NAME DUTY [ttl=SECONDS]", "PWM on an output, DUTY percent (where the pins have PWM)",
            _pwm, arguments=(2, 3), permission=Permission.CONTROL),
    Command("stop", "stop", "every output to its safe level", _stop, permission=Permission.CONTROL),
    Command("claim", "claim", "only this connection may drive outputs", _claim,
            permission=Permission.CONTROL),
    Command("release", "release", "end this connection's claim", _release, permission=Permission.CONTROL),
)  # fmt: skip

#: C{outputs} is for every client that may read. (Only a server with outputs has these commands.)
OUTPUTS_COMMAND = Command("outputs", "outputs", "each output and its level", _outputs)


class OutputsService(Service):
    """
    The outputs for the life of C{serve}: they were set to their safe levels
    when C{serve} was built (before anything listens); while it runs, each
    change on a pin is recorded in the journal (C{journal}, if there is
    one); when it stops (after the listeners and the connections, before
    the journal and the worker pool), every output gets its safe level and
    its pin goes back to input.
    """

    def __init__(
        self,
        controller: OutputController,
        journal: JournalService | None = None,
        clock_state: ClockState | None = None,
        numbering: str = "board",
    ) -> None:
        self.controller = controller
        self.journal = journal
        self._clock_state = clock_state if clock_state is not None else ClockState()
        self._numbering = numbering
        #: Start-up levels and changes waiting for the journal's last levels.
        self._waiting: list | None = None

    def startService(self) -> None:
        super().startService()
        _log.info(
            "Outputs, each at its safe level: {outputs}.",
            outputs=describe_outputs(self.controller.specs, self._numbering),
        )
        if self.journal is not None:
            # The levels at start-up, and every change from now on, wait until the
            # journal says what it last recorded: a command that comes first is
            # then recorded after the start-up level, not instead of it.
            now = self.controller.wall()
            self._waiting = [(spec, self.controller.level(spec.name), now, True) for spec in self.controller.specs]
            self.controller.add_listener(self._changed)
            self.journal.latest_per_sensor().addCallbacks(self._follow, self._follow_failed)

    def _changed(self, spec: OutputSpec, level: Level, when: float) -> None:
        if self._waiting is not None:
            self._waiting.append((spec, level, when, False))
        else:  # shutdown's safe levels too: the journal closes after the outputs
            self._record(spec, level, when)

    def _follow(self, latest) -> None:
        """Record each start-up level the journal does not have already, then every change."""
        waiting, self._waiting = self._waiting, None
        if not self.running:
            return
        for spec, level, when, at_start in waiting:
            known = latest.get(spec.name)
            if at_start and known is not None and known.value == _value(level) and known.text == level.text:
                continue
            self._record(spec, level, when)

    def _follow_failed(self, failure) -> None:
        self._waiting = None
        _log.error(
            "Could not read the journal's last output levels ({error}): output changes are not "
            "recorded for subscribers. Check the disk.",
            error=failure.getErrorMessage(),
        )  # fmt: skip

    def _record(self, spec: OutputSpec, level: Level, when: float) -> None:
        entry = Reading(
            ts=format_timestamp(when), synced=self._clock_state.synced(), sensor=spec.name, value=_value(level),
            text=level.text,
        )
        self.journal.append(entry).addErrback(lambda _: None)  # the journal logs its own failures

    def stopService(self) -> Deferred:
        super().stopService()
        d = self.controller.shutdown()
        d.addCallback(lambda _: _log.info(
            "Outputs back to their safe levels, their pins returned to input."
        ))  # fmt: skip
        d.addCallback(lambda _: self.controller.remove_listener(self._changed))
        return d


def _value(level: Level) -> float | int:
    """The stream's value: 1 or 0, or the PWM duty as a fraction of each period."""
    return level.value if level.pwm else int(level.value)
