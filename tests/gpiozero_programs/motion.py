# Say when a PIR motion sensor sees something, and when it stops.
from signal import pause

from gpiozero import MotionSensor

pir = MotionSensor(4)
pir.when_motion = lambda: print("motion", flush=True)
pir.when_no_motion = lambda: print("no motion", flush=True)
pir.wait_for_no_motion()  # its first samples are in: it is still
print("ready", flush=True)
pause()
