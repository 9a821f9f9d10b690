# Count three presses, waiting for each.
from gpiozero import Button

button = Button(2)
print("ready", flush=True)
for n in range(1, 4):
    button.wait_for_press()
    print(f"press {n}", flush=True)
    button.wait_for_release()
print("done", flush=True)
