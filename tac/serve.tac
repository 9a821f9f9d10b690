# The sensor server of the tutorial's Experiments 1 and 2, as a tac file to
# copy and edit.  Run it with:  twistd --pidfile=serve.pid -ny tac/serve.tac
#
# Settings below may also come from the environment, handy under systemd:
#   RPISENSOR_LISTEN  where to listen, a Twisted endpoint   (tcp:22000)
#   RPISENSOR_GPIO    auto, rpi or sim                      (auto)
import os

from rpisensor.app.tac import application as role_application

LISTEN = os.environ.get("RPISENSOR_LISTEN", "tcp:22000")
GPIO = os.environ.get("RPISENSOR_GPIO", "auto")

ARGUMENTS = [
    "serve",
    "--listen", LISTEN,
    "--gpio", GPIO,
    # The tutorial's button: BOARD pin 24, pull-up, pressed = low.
    "--input", "button=24,pull=up,active=low",
    # Add more inputs, each answered by 'read NAME':
    # "--input", "door=18,pull=up,active=high,on=Door open,off=Door closed",
]

application = role_application("rpisensor-serve", ARGUMENTS)
