"""
gpiozero's remote pins (L{rpisensor.gpiozero}) with the real gpiozero from
PyPI against a real C{twistd rpisensor serve} with simulated pins: inputs
follow the edges the Pi pushes, outputs drive the Pi's pins and are held by
a deadman, undeclared pins are refused, the link drops and returns; and
plain gpiozero programs (C{tests/gpiozero_programs/}) run unchanged with
C{GPIOZERO_PIN_FACTORY=rpisensor}.

The factory runs its own reactor in a thread, so these tests are plain
synchronous ones: they block, and wait for conditions (never for a time).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

# The real gpiozero, from the test extra (pure Python: it installs everywhere, so this never skips).
from gpiozero import LED, Button, LineSensor, MotionSensor, PWMLED
from gpiozero.exc import PinFixedPull, PinInvalidBounce, PinInvalidFunction, PinInvalidPin

from rpisensor.gpiozero import RemoteSensor, RpisensorFactory
from rpisensor.gpiozero.link import CommandRefused, LinkError
from rpisensor.testing import FakeSysfs
from tests.certs import escape, write_pki
from tests.faultproxy import FaultProxy
from tests.processes import Twistd, connect_tcp, free_port, request, wait_until
from tests.v2_subscriber import RawSubscriber

PROGRAMS = Path(__file__).parent / "gpiozero_programs"

#: The Pi of these tests, in BCM numbers as gpiozero counts pins.
PINS = (
    "--numbering", "bcm",
    "--input", "button=2",
    "--input", "pir=4,pull=down,active=high",
    "--input", "line=27,pull=down,active=high",
    "--output", "led=17",
    "--output", "motor=22,ttl=1",
)  # fmt: skip


class Pi:
    """A C{serve --gpio sim} with L{PINS}, and what a test does to it from outside."""

    def __init__(self, *extra: str, listen: str = "tcp:0:interface=127.0.0.1", pins=PINS) -> None:
        self.twistd = Twistd("rpisensor", "serve", "--gpio", "sim", "--journal", "none", "--listen", listen,
                             *pins, *extra)  # fmt: skip
        self.port = self.twistd.wait_port()

    def ask(self, *messages: str) -> list[str]:
        with connect_tcp(self.port) as sock:
            return [request(sock, m.encode()).rstrip(b"\0").decode() for m in messages]

    def sim(self, name: str, *actions: str) -> None:
        self.ask(*(f"sim {name} {action}" for action in actions))

    def outputs(self) -> str:
        return self.ask("outputs")[0]

    def output_is(self, name: str, level: str) -> bool:
        return f"{name}={level}" in self.outputs().split("; ")[0].split()

    def close(self) -> None:
        self.twistd.close()


@pytest.fixture(scope="module")
def pi():
    pi = Pi()
    yield pi
    pi.close()


@pytest.fixture
def factory(pi):
    """A factory of the test's own, on the module's Pi; its pins start released and off."""
    pi.sim("button", "release")
    pi.sim("pir", "release")
    pi.sim("line", "release")
    pi.ask("set led off", "set motor off")
    factory = RpisensorFactory("127.0.0.1", pi.port)
    yield factory
    factory.close()


class Lines:
    """What a program prints, line by line, collected by a thread as it comes."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, count: int = 1) -> None:
        wait_until(lambda: self.lines.count(text) >= count, describe=lambda: "\n".join(self.lines))


def run_program(name: str, port: int, **env: str) -> tuple[subprocess.Popen, Lines]:
    """Start C{tests/gpiozero_programs/NAME} with the rpisensor pin factory, as a user would."""
    environment = {**os.environ, "GPIOZERO_PIN_FACTORY": "rpisensor", "RPISENSOR_HOST": "127.0.0.1",
                   "RPISENSOR_PORT": str(port), "PYTHONUNBUFFERED": "1", **env}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(PROGRAMS / name)], env=environment, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return process, Lines(process.stdout)


def stop(process: subprocess.Popen, lines: Lines, signum: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(signum)
    process.wait(30)


# -- inputs -------------------------------------------------------------------------------


def test_button_when_pressed_fires_once_per_press_pushed_from_the_pi(pi, factory):
    button = Button(2, pin_factory=factory)
    presses, releases = [], []
    button.when_pressed = lambda: presses.append(button.is_pressed)
    button.when_released = lambda: releases.append(button.is_pressed)
    assert not button.is_pressed
    pi.sim("button", *["press", "release"] * 5)
    wait_until(lambda: len(releases) == 5, describe=lambda: f"{presses} {releases}")
    assert presses == [True] * 5 and releases == [False] * 5
    pi.sim("button", "press")
    assert button.wait_for_press(timeout=30)
    assert button.is_pressed and button.value == 1
    wait_until(lambda: len(presses) == 6)
    pi.sim("button", "release")
    assert button.wait_for_release(timeout=30)
    button.close()


def test_the_pins_pull_and_debounce_are_the_pis(pi, factory):
    button = Button(2, pin_factory=factory)
    assert button.pull_up and button.pin.pull == "up" and button.pin.bounce is None
    button.close()
    with pytest.raises(PinFixedPull, match=r"pulled down on the Pi; for pull up, .*--input pir=4,pull=up"):
        Button(4, pin_factory=factory)  # Button wants a pull-up; pir is pulled down
    with pytest.raises(PinInvalidBounce, match=r"--input button=2,.*debounce=50"):
        Button(2, bounce_time=0.05, pin_factory=factory)


def test_a_motion_sensor_and_a_line_sensor_on_inputs(pi, factory):
    pir = MotionSensor(4, pin_factory=factory)
    line = LineSensor(27, pin_factory=factory)
    seen = []
    pir.when_motion = lambda: seen.append("motion")
    pir.when_no_motion = lambda: seen.append("no motion")
    assert not pir.motion_detected
    pi.sim("pir", "press")
    assert pir.wait_for_motion(timeout=30)
    pi.sim("pir", "release")
    assert pir.wait_for_no_motion(timeout=30)
    wait_until(lambda: seen == ["motion", "no motion"], describe=lambda: str(seen))
    assert line.line_detected  # released: low, the line
    pi.sim("line", "press")
    assert line.wait_for_no_line(timeout=30)
    pi.sim("line", "release")
    assert line.wait_for_line(timeout=30)
    pir.close()
    line.close()


def test_an_input_by_its_name_on_the_pi(pi, factory):
    button = Button("button", pin_factory=factory)
    assert repr(button.pin).startswith("GPIO2 (button on tcp:host=127.0.0.1")
    button.close()


# -- outputs ------------------------------------------------------------------------------


def test_led_on_drives_the_pis_output(pi, factory):
    led = LED(17, pin_factory=factory)
    assert pi.output_is("led", "off")
    led.on()
    assert pi.output_is("led", "on") and led.is_lit  # on the pin when on() returned
    led.off()
    assert pi.output_is("led", "off") and not led.is_lit
    led.on()
    led.close()  # back to its safe level
    assert pi.output_is("led", "off")


def journal_last(pi: Pi) -> int:
    """The last seq of the Pi's journal now."""
    probe = RawSubscriber(pi.port, None)
    probe.close()
    return probe.welcome["last"]


def led_changes(pi: Pi, after: int, count: int) -> list[str]:
    """The texts of the next C{count} changes of the Pi's led after entry C{after}."""
    watch = RawSubscriber(pi.port, after)
    try:
        changes = []
        while len(changes) < count:
            entry = watch.next_entry()
            if entry["sensor"] == "led":
                changes.append(entry["text"])
        return changes
    finally:
        watch.close()


def test_led_blink_drives_the_pin_on_and_off(pi, factory):
    after = journal_last(pi)
    led = LED(17, pin_factory=factory)
    led.blink(on_time=0.1, off_time=0.1, n=3, background=False)
    assert led_changes(pi, after, 6) == ["on", "off"] * 3
    led.close()


def test_pwm_at_the_outputs_frequency(pi, factory):
    led = PWMLED(17, pin_factory=factory)
    led.value = 0.4
    assert pi.output_is("led", "pwm:40")
    assert led.value == pytest.approx(0.4)
    led.close()
    assert pi.output_is("led", "off")
    with pytest.raises(Exception, match=r"runs PWM at 100 Hz.*--output led=17,freq=1000"):
        PWMLED(17, frequency=1000, pin_factory=factory)


def test_a_held_output_stays_on_past_its_ttl_while_the_program_runs(pi):
    factory = RpisensorFactory("127.0.0.1", pi.port, ttl=0.6)
    try:
        renewals = []
        renewed = factory.link._renewed
        factory.link._renewed = lambda reply, name: (renewals.append(reply), renewed(reply, name))
        motor = LED(22, pin_factory=factory)  # the Pi's own deadman is 1 s; the factory holds it 0.6 s
        motor.on()
        # Renewed every 0.2 s: six renewals span twice the ttl, and the motor is still on.
        wait_until(lambda: len(renewals) >= 6)
        assert set(renewals) == {"motor on"}
        assert pi.output_is("motor", "on")
        assert "Output motor back to its safe level" not in pi.twistd.log()
        motor.close()
        assert pi.output_is("motor", "off")
    finally:
        factory.close()


def test_an_output_without_the_control_grant_is_refused(tmp_path):
    pi = Pi("--control-allow", "10.99.0.0/16")  # loopback has no grant
    try:
        factory = RpisensorFactory("127.0.0.1", pi.port)
        try:
            assert factory.layout.control is False
            with pytest.raises(CommandRefused, match="may not drive outputs"):
                LED(17, pin_factory=factory)
        finally:
            factory.close()
    finally:
        pi.close()


# -- what a remote pin cannot do -------------------------------------------------------------


def test_a_pin_not_declared_on_the_pi_is_refused_clearly(pi, factory):
    with pytest.raises(PinInvalidPin) as refused:
        Button(5, pin_factory=factory)
    message = str(refused.value)
    assert "GPIO5 (BOARD 29)" in message and "does not declare" in message
    assert "button on GPIO2 (input)" in message and "led on GPIO17 (output)" in message
    assert "--input NAME=5" in message
    with pytest.raises(PinInvalidFunction, match=r"cannot be an output remotely.*--output button=2"):
        LED(2, pin_factory=factory)
    with pytest.raises(PinInvalidFunction, match=r"cannot be an input remotely.*--input led=17"):
        Button(17, pin_factory=factory)


def test_an_unreachable_pi_is_a_clear_error():
    with pytest.raises(LinkError, match=r"connection refused; is the server running"):
        RpisensorFactory("127.0.0.1", free_port(), timeout=5)


# -- sensors ------------------------------------------------------------------------------------


def test_a_sensor_as_value(tmp_path):
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.cpu(48.25)
    pi = Pi("--sysfs-root", str(sysfs.root), "--sensor", "cpu=cpu,interval=0.1")
    try:
        factory = RpisensorFactory("127.0.0.1", pi.port)
        try:
            cpu = RemoteSensor("cpu", threshold=60, pin_factory=factory)
            assert cpu.value == pytest.approx(48.25) and cpu.unit == "°C" and cpu.text == "48.25 °C"
            assert not cpu.is_active
            sysfs.cpu(71.5)
            assert cpu.wait_for_active(timeout=30)
            assert cpu.value == pytest.approx(71.5)
            cpu.close()
            with pytest.raises(ValueError, match=r"no sensor 'gpu' \(its sensors: cpu\)"):
                RemoteSensor("gpu", pin_factory=factory)
        finally:
            factory.close()
    finally:
        pi.close()


# -- the link dropping and returning -----------------------------------------------------------


def test_the_link_drops_and_returns(pi):
    pi.sim("button", "release")
    pi.ask("set led off")
    proxy = FaultProxy(pi.port)
    factory = RpisensorFactory("127.0.0.1", proxy.port)
    try:
        button = Button(2, pin_factory=factory)
        led = LED(17, pin_factory=factory)
        presses = []
        button.when_pressed = lambda: presses.append(1)
        led.on()
        proxy.refuse(True)
        proxy.cut()  # the link is down: the Pi's deadman turns what the program held off at once
        wait_until(lambda: pi.output_is("led", "off"))
        pi.sim("button", "press")  # while the program cannot see it
        assert not button.is_pressed and not presses
        led.on()  # the link is down: the level is remembered, not lost
        proxy.refuse(False)
        assert button.wait_for_press(timeout=30)  # back by itself, with the Pi's state now: one press
        wait_until(lambda: presses == [1])
        wait_until(lambda: pi.output_is("led", "on"))  # what the program holds is driven again
        pi.sim("button", "release", "press")
        wait_until(lambda: presses == [1, 1])
        button.close()
        led.close()
    finally:
        factory.close()
        proxy.close()


# -- programs, unchanged but for the factory ---------------------------------------------------


def test_program_button_led(pi):
    pi.sim("button", "release")
    process, out = run_program("button_led.py", pi.port)
    try:
        out.wait_for("ready")
        pi.sim("button", "press")
        wait_until(lambda: pi.output_is("led", "on"))
        pi.sim("button", "release")
        wait_until(lambda: pi.output_is("led", "off"))
        pi.sim("button", "press")
        wait_until(lambda: pi.output_is("led", "on"))
    finally:
        stop(process, out, signal.SIGKILL)
    # Killed: its connection closed, so the Pi's deadman turned the LED off at once.
    wait_until(lambda: pi.output_is("led", "off"))
    pi.sim("button", "release")


def test_program_wait_for_press(pi):
    pi.sim("button", "release")
    process, out = run_program("wait_for_press.py", pi.port)
    try:
        out.wait_for("ready")
        for n in range(1, 4):
            pi.sim("button", "press")
            out.wait_for(f"press {n}")
            pi.sim("button", "release")
        out.wait_for("done")
        assert process.wait(30) == 0, out.lines
        assert out.lines == ["ready", "press 1", "press 2", "press 3", "done"]
    finally:
        stop(process, out)


def test_program_blink(pi):
    after = journal_last(pi)
    process, out = run_program("blink.py", pi.port)
    try:
        out.wait_for("ready")
        assert led_changes(pi, after, 6) == ["on", "off"] * 3
    finally:
        stop(process, out)
    wait_until(lambda: pi.output_is("led", "off"))  # ended by SIGTERM: the deadman


def test_program_motion(pi):
    pi.sim("pir", "release")
    process, out = run_program("motion.py", pi.port)
    try:
        out.wait_for("ready")
        pi.sim("pir", "press")
        out.wait_for("motion")
        pi.sim("pir", "release")
        out.wait_for("no motion")
        pi.sim("pir", "press")
        out.wait_for("motion", 2)
    finally:
        stop(process, out)


def test_program_line_sensor(pi):
    pi.sim("line", "release")
    process, out = run_program("line_sensor.py", pi.port)
    try:
        out.wait_for("ready")
        pi.sim("line", "press")
        out.wait_for("no line")
        pi.sim("line", "release")
        out.wait_for("line")
    finally:
        stop(process, out)


def test_a_program_on_a_pin_the_pi_does_not_declare_says_so():
    other = Pi(pins=("--numbering", "bcm", "--input", "button=2"))
    try:
        process, out = run_program("blink.py", other.port)
        assert process.wait(30) == 1
        out.wait_for("ready", 0)
        text = "\n".join(out.lines)
        assert "PinInvalidPin: 17 is GPIO17 (BOARD 11), which rpisensor serve at" in text, text
        assert "it declares: button on GPIO2 (input). Declare it on the Pi" in text, text
    finally:
        other.close()


def test_program_over_tls_with_a_client_certificate(tmp_path):
    paths = write_pki(tmp_path / "pki")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={escape(paths.server_key)}:certKey={escape(paths.server_cert)}"
    pi = Pi("--client-ca", paths.ca_cert, "--control-cert", "rpisensor test client", listen=listen)
    try:
        process, out = run_program(
            "button_led.py", pi.port, RPISENSOR_HOST="localhost", RPISENSOR_TLS_TRUST=paths.trust_dir,
            RPISENSOR_TLS_CERT=paths.client_cert, RPISENSOR_TLS_KEY=paths.client_key,
        )  # fmt: skip
        try:
            out.wait_for("ready")
            # The test's own sim commands go over TLS too: through the factory's link.
            factory = RpisensorFactory(
                "localhost", pi.port, trust_roots=paths.trust_dir, certificate=paths.client_cert,
                private_key=paths.client_key,
            )  # fmt: skip
            try:
                led = LED(17, pin_factory=factory)
                assert factory.layout.control
                led.close()
                assert factory.link.command("sim button press") == "Button pressed"
                wait_until(lambda: factory.link.command("outputs").startswith("led=on"))
            finally:
                factory.close()
        finally:
            stop(process, out)
    finally:
        pi.close()
