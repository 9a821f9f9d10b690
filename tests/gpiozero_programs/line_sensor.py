# Say when a line sensor finds the line, and when it loses it.
from signal import pause

from gpiozero import LineSensor

sensor = LineSensor(27)
sensor.when_line = lambda: print("line", flush=True)
sensor.when_no_line = lambda: print("no line", flush=True)
sensor.wait_for_line()  # its first samples are in: on the line
print("ready", flush=True)
pause()
