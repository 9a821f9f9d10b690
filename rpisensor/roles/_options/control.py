"""
The options of the outputs: what may be driven, how fast, and for how long
on one command (L{OutputOptions}: C{serve}, and C{report} for MQTT); and, for
C{serve}'s clients, by whom (L{ControlOptions}).
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options.base import FoldedOptions, non_negative_float

#: The longest one command may hold an output off its safe level, by default.
DEFAULT_MAX_TTL = 60.0


class OutputOptions(FoldedOptions):
    """The declared outputs and their limits; used with GPIOOptions (numbering, inputs, sensors)."""

    optParameters = [
        ["max-ttl", None, f"{DEFAULT_MAX_TTL:g}",
         "Longest, in seconds, that one command may hold an output off its safe level: an "
         "output's ttl=, a command's ttl= and a pulse's length must fit in it. Example: --max-ttl 5"],
        ["control-rate", None, "20",
         "Control commands (set, pulse, pwm, stop, claim, release) one connection may send per "
         "second; more get an error and are not carried out. Example: --control-rate 50"],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self._output_texts: list[str] = []
        self["outputs"] = []

    def opt_output(self, value: str) -> None:
        """
        An output a client may drive, NAME=PIN[,safe=off|on][,ttl=SECONDS][,freq=HZ]
        (repeatable; PIN in --numbering, each on its own pin; nothing is writable that is
        not declared). safe= is its level at start-up, on stop and at shutdown (default off).
        Without ttl= it is a latch (it keeps the last level set); with ttl= a deadman: back to
        safe when no command renews it within ttl seconds, and at once when the client that
        drives it disconnects. freq= is the PWM frequency (default 100). Examples:
        --output led=12  --output motor=16,ttl=0.5
        """
        self._output_texts.append(value)

    def postOptions(self) -> None:
        super().postOptions()
        from rpisensor.control.outputs import parse_output

        self["max-ttl"] = non_negative_float("max-ttl", self["max-ttl"])
        if self["max-ttl"] <= 0:
            raise usage.UsageError("--max-ttl must be more than 0 seconds")
        self["control-rate"] = non_negative_float("control-rate", self["control-rate"])
        if self["control-rate"] <= 0:
            raise usage.UsageError("--control-rate must be more than 0 commands a second")
        outputs = []
        for text in self._output_texts:
            try:
                outputs.append(parse_output(text, self["numbering"], self["max-ttl"]))
            except ValueError as e:
                raise usage.UsageError(f"--output {text}: {e}") from None
        self["outputs"] = outputs
        taken = {spec.name: f"input {spec.name!r}" for spec in self["inputs"]}
        taken.update({spec.name: f"sensor {spec.name!r}" for spec in self.get("sensors", ())})
        pins = {spec.pin: f"input {spec.name!r}" for spec in self["inputs"]}
        for spec in outputs:
            if spec.name in taken:
                raise usage.UsageError(f"--output: the name {spec.name!r} is already {taken[spec.name]}")
            if spec.pin in pins:
                raise usage.UsageError(
                    f"--output {spec.name}: {self['numbering'].upper()} pin {spec.pin} is already "
                    f"{pins[spec.pin]}; give each output its own pin (the default input, the "
                    "tutorial's button, is BOARD 24: move it with --input)"
                )
            taken[spec.name] = f"output {spec.name!r}"
            pins[spec.pin] = f"output {spec.name!r}"


class ControlOptions(OutputOptions):
    """Options of serve's outputs; used with GPIOOptions (numbering, inputs) and ListenOptions (client-ca)."""

    def __init__(self) -> None:
        super().__init__()
        self["control-allow"] = []
        self["control-cert"] = []

    def opt_control_allow(self, network: str) -> None:
        """
        A network whose clients may drive outputs (repeatable). Default: this machine
        only (loopback), unless --control-cert is given. Reading stays open to whoever may
        connect. Example: --control-allow 192.168.1.0/24
        """
        from rpisensor.net.access import parse_network

        try:
            self["control-allow"].append(parse_network(network))
        except ValueError as e:
            raise usage.UsageError(f"--control-allow: {e}") from None

    def opt_control_cert(self, name: str) -> None:
        """
        With --client-ca: the CN of a client certificate that may drive outputs
        (repeatable). Example: --control-cert robot-console
        """
        if not name.strip():
            raise usage.UsageError("--control-cert needs a certificate's CN, e.g. --control-cert robot-console")
        self["control-cert"].append(name.strip())

    def postOptions(self) -> None:
        super().postOptions()
        if self["control-cert"] and self["client-ca"] is None:
            raise usage.UsageError(
                "--control-cert needs --client-ca: only a certificate the server checked can grant control"
            )

    def control_grants(self):
        """Who may drive the outputs, as the options say."""
        from rpisensor.net.access import ControlGrants

        return ControlGrants(self["control-allow"] or None, self["control-cert"])
