# The LED follows the button: on while it is pressed.
from signal import pause

from gpiozero import LED, Button

led = LED(17)
button = Button(2)

button.when_pressed = led.on
button.when_released = led.off
print("ready", flush=True)
pause()
