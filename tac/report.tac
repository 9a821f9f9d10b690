# The Pi side of the tutorial's Experiment 3: push the button's state to a PC
# server, anywhere on the Internet.  Run it with:  twistd --pidfile=report.pid -ny tac/report.tac
#
# Settings below may also come from the environment:
#   RPISENSOR_CONNECT   the PC, as a Twisted client endpoint
#                       (tcp:host=192.168.0.111:port=22000)
#   RPISENSOR_GPIO      auto, rpi or sim (auto)
#   RPISENSOR_INTERVAL  seconds between readings (2)
import os

from rpisensor.app.tac import application as role_application

CONNECT = os.environ.get("RPISENSOR_CONNECT", "tcp:host=192.168.0.111:port=22000")
GPIO = os.environ.get("RPISENSOR_GPIO", "auto")
INTERVAL = os.environ.get("RPISENSOR_INTERVAL", "2")

ARGUMENTS = [
    "report",
    "--connect", CONNECT,
    "--gpio", GPIO,
    "--interval", INTERVAL,
    # The tutorial's button: BOARD pin 24, pull-up, pressed = low.
    "--input", "button=24,pull=up,active=low",
    # Send only changes, plus the full state every minute:
    # "--on-change", "--heartbeat", "60",
]

application = role_application("rpisensor-report", ARGUMENTS)
