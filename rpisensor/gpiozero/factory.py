"""
A gpiozero pin factory whose pins are a Pi's, through C{rpisensor serve}:
every Pi, the Pi 5 included (C{serve} reads the kernel's GPIO device), over
TLS with client certificates if wanted, and only the pins C{serve} declares.

    GPIOZERO_PIN_FACTORY=rpisensor RPISENSOR_HOST=raspberrypi.local python3 button.py

or, in the program, C{Device.pin_factory = RpisensorFactory(host="raspberrypi.local")}.

What a pin is here:

  - an input declared on the Pi (C{--input}): its level follows the changes
    the Pi pushes (no polling); C{when_changed} fires once per change, in
    the factory's dispatcher thread; pull and debounce are the Pi's
    (C{pull=}, C{debounce=} of C{--input}), so a device that asks for others
    is refused saying which to declare;
  - an output declared on the Pi (C{--output}): C{state} drives it with
    C{set} (or C{pwm}, at the output's C{freq=}), held with a deadman
    C{ttl} while the program runs (see L{rpisensor.gpiozero.link});
  - any other pin: refused, naming what the Pi declares. No SPI, I2C or
    hardware PWM: read such sensors on the Pi (C{--sensor}) and use them
    here as L{rpisensor.gpiozero.RemoteSensor}.
"""

from __future__ import annotations

from time import monotonic

from gpiozero.compat import frozendict
from gpiozero.exc import (
    PinFixedPull,
    PinInvalidBounce,
    PinInvalidEdges,
    PinInvalidFunction,
    PinInvalidPin,
    PinInvalidState,
    PinPWMFixedValue,
    PinPWMUnsupported,
    PinSetInput,
    PinSPIUnsupported,
    PinUnknownPi,
)
from gpiozero.pins.pi import PiBoardInfo, PiFactory, PiPin

from rpisensor.gpiozero.endpoint import endpoint_for, setting
from rpisensor.gpiozero.link import LinkSettings, PiLink
from rpisensor.hw.pins import BCM_TO_BOARD
from rpisensor.wire import layout as wire_layout

#: The board gpiozero's own mock factory pretends to be, for a C{serve} that is not on a Pi
#: (simulated pins): its 40-pin header is every current Pi's.
DEFAULT_REVISION = "a02082"
DEFAULT_TTL = 2.0
DEFAULT_TIMEOUT = 10.0

#: gpiozero's pull names for the Pi's C{pull=}.
_PULLS = {"up": "up", "down": "down", "off": "floating"}
_EDGES = ("both", "rising", "falling", "none")


def _seconds(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise ValueError(f"{what} must be a number of seconds above 0, got {value!r}")
    return number


def board_info(layout: wire_layout.PinLayout) -> PiBoardInfo:
    """
    The Pi's board as gpiozero knows it (by its revision), each declared
    pin answering to its name on the Pi too: C{Button("button")}.
    """
    try:
        info = PiBoardInfo.from_revision(int(layout.revision or DEFAULT_REVISION, 16))
    except PinUnknownPi:  # a revision this gpiozero does not know: the 40-pin header all share
        info = PiBoardInfo.from_revision(int(DEFAULT_REVISION, 16))
    taken = {name for header in info.headers.values() for pin in header.pins.values() for name in pin.names}
    names = {f"GPIO{p.gpio}": p.name for p in (*layout.inputs, *layout.outputs) if p.name not in taken}
    headers = frozendict({
        header_name: header._replace(pins=frozendict({
            number: pin._replace(names=pin.names | {names[pin.name]}) if pin.name in names else pin
            for number, pin in header.pins.items()
        }))
        for header_name, header in info.headers.items()
    })  # fmt: skip
    return info._replace(headers=headers)


class RpisensorFactory(PiFactory):
    """
    Pins of a Pi running C{rpisensor serve}, over the network.

    @param host: the Pi (C{RPISENSOR_HOST}, else C{localhost}).
    @param port: C{serve}'s port (C{RPISENSOR_PORT}, else 22000).
    @param endpoint: a Twisted client endpoint instead (C{RPISENSOR_ENDPOINT}),
        e.g. C{tls:host=pi.local:port=22443:trustRoots=trust}.
    @param trust_roots: over TLS: a directory of the CA certificates to trust
        (C{RPISENSOR_TLS_TRUST}).
    @param certificate: over TLS: this client's certificate, PEM (C{RPISENSOR_TLS_CERT}).
    @param private_key: its key (C{RPISENSOR_TLS_KEY}).
    @param ttl: seconds an output the program drives stays driven without
        a renewal (C{RPISENSOR_TTL}, else 2): the longest an output stays
        on after the program or the link died (never longer than the
        output's own C{ttl=} on the Pi).
    @param timeout: seconds to wait to connect, and for each reply (C{RPISENSOR_TIMEOUT}, else 10).

    @raise rpisensor.gpiozero.link.LinkError: the Pi cannot be reached; the message says what to check.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        endpoint: str | None = None,
        trust_roots: str | None = None,
        certificate: str | None = None,
        private_key: str | None = None,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.pin_class = RpisensorPin
        settings = LinkSettings(
            endpoint_for(host, port, endpoint, trust_roots, certificate, private_key),
            timeout=_seconds(setting(timeout, "RPISENSOR_TIMEOUT", DEFAULT_TIMEOUT), "the timeout (RPISENSOR_TIMEOUT)"),
            ttl=_seconds(setting(ttl, "RPISENSOR_TTL", DEFAULT_TTL), "the ttl (RPISENSOR_TTL)"),
        )  # fmt: skip
        self.link = PiLink(settings)
        self.layout = self.link.open()
        self._inputs = {p.gpio: p for p in self.layout.inputs}
        self._outputs = {p.gpio: p for p in self.layout.outputs}
        self._sensors = {s.name: s for s in self.layout.sensors}
        self._info = board_info(self.layout)
        self.link.add_listener(self._pushed)

    @property
    def endpoint(self) -> str:
        return self.link.endpoint

    def __repr__(self) -> str:
        return f"<RpisensorFactory {self.endpoint}>"

    def close(self) -> None:
        super().close()
        self.link.close()

    def _get_revision(self) -> int:
        return int(self._info.revision, 16)

    @staticmethod
    def ticks() -> float:
        return monotonic()

    @staticmethod
    def ticks_diff(later: float, earlier: float) -> float:
        return later - earlier

    def pin(self, name):
        """The Pi's pin C{name} (C{17}, C{"GPIO17"}, C{"BOARD11"}, or its name on the Pi), if declared there."""
        for _, info in self.board_info.find_pin(name):
            if "gpio" in info.interfaces:
                gpio = int(info.name[4:])
                if gpio not in self._inputs and gpio not in self._outputs:
                    raise PinInvalidPin(self._undeclared(name, gpio))
                break
        return super().pin(name)

    def _undeclared(self, name, gpio: int) -> str:
        board = BCM_TO_BOARD.get(gpio)
        where = f"GPIO{gpio}" + (f" (BOARD {board})" if board else "")
        declared = [f"{p.name} on GPIO{p.gpio} (input)" for p in self.layout.inputs]
        declared += [f"{p.name} on GPIO{p.gpio} (output)" for p in self.layout.outputs]
        return (
            f"{name!r} is {where}, which rpisensor serve at {self.endpoint} does not declare, so it "
            f"cannot be used remotely; it declares: {', '.join(declared) or 'no pins'}. Declare it on "
            f"the Pi: --input NAME={gpio} or --output NAME={gpio} (with --numbering bcm)"
        )

    def spi(self, **spi_args):
        raise PinSPIUnsupported(
            "rpisensor's remote pins carry no SPI: read such a sensor on the Pi (serve --sensor) and "
            "use it here as rpisensor.gpiozero.RemoteSensor"
        )

    def input_spec(self, gpio: int) -> wire_layout.InputPin | None:
        return self._inputs.get(gpio)

    def output_spec(self, gpio: int) -> wire_layout.OutputPin | None:
        return self._outputs.get(gpio)

    def sensor_info(self, name: str) -> wire_layout.SensorInfo:
        """
        @raise ValueError: the Pi has no such sensor; the message names those it has.
        """
        if name not in self._sensors:
            declared = ", ".join(self._sensors) or "none"
            raise ValueError(
                f"rpisensor serve at {self.endpoint} has no sensor {name!r} (its sensors: {declared}); "
                f"declare it on the Pi with --sensor {name}=KIND:ARGS"
            )
        return self._sensors[name]

    def _pushed(self, reading, ticks: float) -> None:
        """One reading from the Pi, in the dispatcher thread: to the pin it concerns."""
        for pin in list(self.pins.values()):
            if pin.remote_name == reading.sensor:
                pin.pushed(reading, ticks)


class RpisensorPin(PiPin):
    """One pin of the Pi that C{serve} declares, as gpiozero uses pins."""

    def __init__(self, factory: RpisensorFactory, info) -> None:
        super().__init__(factory, info)
        gpio = self._number
        self._input = factory.input_spec(gpio)
        self._output = factory.output_spec(gpio)
        spec = self._input or self._output
        self.remote_name = spec.name
        self._edges = "both"
        self._frequency: float | None = None
        #: The level the program last gave an output (C{None}: none yet: the Pi's).
        self._driven: float | bool | None = None
        #: The last input reading handed on: (stream, seq), and its level.
        self._seen: tuple[str, int] | None = None
        self._high: bool | None = None
        if self._input is not None:
            reading = factory.link.latest(spec.name)
            self._seen, self._high = (reading.stream, reading.seq), self._level(reading)

    def __repr__(self) -> str:
        return f"{self._info.name} ({self.remote_name} on {self.factory.endpoint})"

    def _describe(self) -> str:
        kind = "input" if self._input is not None else "output"
        return f"{self._info.name} ({self.remote_name}, an {kind} of rpisensor serve at {self.factory.endpoint})"

    # -- function -----------------------------------------------------------------------------

    def _get_function(self) -> str:
        return "input" if self._input is not None else "output"

    def _set_function(self, value: str) -> None:
        if value == self._get_function():
            return
        if value in ("input", "output"):
            other = "--output" if value == "output" else "--input"
            raise PinInvalidFunction(
                f"{self._describe()} cannot be an {value} remotely: declare it on the Pi with "
                f"{other} {self.remote_name}={self._number} (--numbering bcm) instead"
            )
        raise PinInvalidFunction(f"{self._describe()}: a remote pin is only an input or an output, not {value!r}")

    # -- state ----------------------------------------------------------------------------

    def _level(self, reading) -> bool:
        """An input's pin level from its reading: C{value} 1 means active, and active low means a low level."""
        return bool(reading.value) != self._input.active_low

    def _get_state(self):
        if self._input is not None:
            return self._high
        if self._driven is not None:
            return self._driven
        reading = self.factory.link.latest(self.remote_name)
        return reading.value if self._frequency is not None else bool(reading.value)

    def _set_state(self, value) -> None:
        if self._input is not None:
            raise PinSetInput(f"cannot set the state of {self._describe()}")
        spec = self._output
        if self._frequency is not None:
            try:
                duty = float(value)
            except (TypeError, ValueError):
                duty = float("nan")
            if not 0 <= duty <= 1:
                raise PinInvalidState(f"invalid state {value!r} for {self!r}: PWM takes 0 to 1")
            safe = duty == (1.0 if spec.safe else 0.0)
            command, level = f"pwm {spec.name} {duty * 100:g}", duty
        else:
            high = bool(value)
            safe = high == spec.safe
            command, level = f"set {spec.name} {'on' if high else 'off'}", high
        self.factory.link.drive(spec.name, command, safe, self._ttl())
        self._driven = level

    def _ttl(self) -> float:
        own = self._output.ttl
        ttl = self.factory.link.settings.ttl
        return min(ttl, own) if own is not None else ttl

    def pushed(self, reading, ticks: float) -> None:
        """A reading of this pin's input, in the dispatcher thread: a change fires C{when_changed}."""
        if self._input is None:
            return
        seen = self._seen
        if seen is not None and seen[0] == reading.stream and reading.seq <= seen[1]:
            return  # this pin's state came from it, or from a later one
        self._seen = (reading.stream, reading.seq)
        high = self._level(reading)
        if high == self._high:
            return
        self._high = high
        wanted = {"both": True, "rising": high, "falling": not high, "none": False}[self._edges]
        if wanted and self._when_changed is not None:
            self._call_when_changed(ticks, high)

    def close(self) -> None:
        self.when_changed = None
        if self._output is not None and self._driven is not None:
            spec = self._output
            self.factory.link.release(spec.name, f"set {spec.name} {'on' if spec.safe else 'off'}")
            self._driven = None

    # -- pull, bounce, edges: the Pi's -------------------------------------------------------

    def _get_pull(self) -> str:
        return _PULLS[self._input.pull] if self._input is not None else "floating"

    def _set_pull(self, value: str) -> None:
        if value == self._get_pull():
            return
        if self._input is None:
            raise PinFixedPull(f"cannot set the pull of {self._describe()}")
        wanted = {v: k for k, v in _PULLS.items()}.get(value, value)
        raise PinFixedPull(
            f"{self._describe()} is pulled {self._input.pull} on the Pi; for pull {wanted}, start serve "
            f"with --input {self.remote_name}={self._number},pull={wanted} (--numbering bcm)"
        )

    def _get_bounce(self):
        if self._input is None or not self._input.debounce:
            return None
        return self._input.debounce

    def _set_bounce(self, value) -> None:
        if self._input is None:
            raise PinInvalidBounce(f"{self._describe()} is an output: it has no bounce")
        if value is None or abs(float(value) - self._input.debounce) < 0.0005:
            return  # the Pi's own debounce (its kernel's, with the gpiod backend) applies
        raise PinInvalidBounce(
            f"{self._describe()} is debounced on the Pi ({self._input.debounce * 1000:g} ms): for a bounce "
            f"of {float(value):g} s, start serve with --input {self.remote_name}={self._number},"
            f"debounce={round(float(value) * 1000)} (--numbering bcm), and leave bounce_time out here"
        )

    def _get_edges(self) -> str:
        return self._edges

    def _set_edges(self, value: str) -> None:
        if value not in _EDGES:
            raise PinInvalidEdges(f"invalid edge specification {value!r} for {self!r}")
        self._edges = value

    # -- PWM ------------------------------------------------------------------------------------

    def _get_frequency(self):
        return self._frequency

    def _set_frequency(self, value) -> None:
        if value is None:
            if self._frequency is not None:
                self._frequency = None
                self._set_state(self._output.safe)
            return
        if self._output is None:
            raise PinPWMFixedValue(f"cannot start PWM on {self._describe()}")
        if not self.factory.layout.pwm:
            raise PinPWMUnsupported(
                f"{self._describe()}: the Pi's GPIO backend has no PWM (the kernel's gpiod has none); "
                "serve with --gpio rpi for RPi.GPIO's software PWM, or use it on and off"
            )
        if abs(float(value) - self._output.frequency) > 0.5:
            raise PinPWMFixedValue(
                f"{self._describe()} runs PWM at {self._output.frequency:g} Hz, its freq= on the Pi; for "
                f"{float(value):g} Hz start serve with --output {self.remote_name}={self._number},"
                f"freq={float(value):g} (--numbering bcm)"
            )
        self._frequency = self._output.frequency

    # -- events: the Pi pushes every change --------------------------------------------------

    def _enable_event_detect(self) -> None:
        if self._input is None:
            raise PinInvalidFunction(f"{self._describe()} is an output: it has no events")

    def _disable_event_detect(self) -> None:
        pass
