"""
A measurement sensor of the Pi (C{serve --sensor}) as a gpiozero device:
C{value} is its latest reading, pushed by the Pi as it is published, so it
can feed other devices (C{led.source = ...}, with gpiozero's C{tools}).
"""

from __future__ import annotations

from gpiozero import InternalDevice

from rpisensor.gpiozero.factory import RpisensorFactory


class RemoteSensor(InternalDevice):
    """
    The Pi's sensor C{name}, e.g. C{RemoteSensor("room")} for
    C{serve --sensor room=w1:28-0316a2795aff}.

    @param threshold: C{is_active} (and C{when_activated}, C{wait_for_active})
        is the value being above it; without one, the value being non-zero.
    @param pin_factory: an L{RpisensorFactory}; by default gpiozero's
        C{Device.pin_factory} (C{GPIOZERO_PIN_FACTORY=rpisensor}).

    @ivar unit: its unit on the Pi (C{"°C"}; C{""} for none).
    @raise ValueError: the Pi has no sensor C{name}; the message names those it has.
    """

    def __init__(self, name: str, *, threshold: float | None = None, pin_factory=None) -> None:
        super().__init__(pin_factory=pin_factory)
        factory = self.pin_factory
        if not isinstance(factory, RpisensorFactory):
            self.close()
            raise TypeError(
                f"RemoteSensor reads a Pi's sensor through rpisensor serve: it needs the rpisensor pin "
                f"factory (GPIOZERO_PIN_FACTORY=rpisensor, or pin_factory=RpisensorFactory(...)), "
                f"not {factory!r}"
            )
        self.name = name
        self.threshold = threshold
        self.unit = factory.sensor_info(name).unit
        self._reading = factory.link.latest(name)
        factory.link.add_listener(self._pushed)
        self._fire_events(factory.ticks(), self.is_active)

    def __repr__(self) -> str:
        if self.closed:
            return f"<rpisensor.gpiozero.RemoteSensor {getattr(self, 'name', '?')} closed>"
        return f"<rpisensor.gpiozero.RemoteSensor {self.name}: {self.text}>"

    @property
    def value(self) -> float:
        """The latest reading's number, e.g. C{22.562}."""
        self._check_open()
        return self._reading.value

    @property
    def text(self) -> str:
        """The latest reading as the Pi words it, e.g. C{"22.56 °C"}."""
        self._check_open()
        return self._reading.text

    @property
    def is_active(self) -> bool:
        value = self.value
        return value > self.threshold if self.threshold is not None else bool(value)

    def _pushed(self, reading, ticks: float) -> None:
        if reading.sensor == self.name and not self.closed:
            self._reading = reading
            self._fire_events(ticks, self.is_active)

    def close(self) -> None:
        factory = getattr(self, "pin_factory", None)
        if isinstance(factory, RpisensorFactory) and hasattr(self, "name"):
            factory.link.remove_listener(self._pushed)
        super().close()
