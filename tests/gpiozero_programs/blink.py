# Blink an LED: a quarter of a second on, a quarter off, until stopped.
from signal import pause

from gpiozero import LED

led = LED(17)
led.blink(on_time=0.25, off_time=0.25)
print("ready", flush=True)
pause()
