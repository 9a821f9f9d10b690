# The PC side of the tutorial's Experiments 1 and 2: ask a Pi for its button
# every 2 seconds and log each reply.  Run it with:  twistd --pidfile=poll.pid -ny tac/poll.tac
#
# Settings below may also come from the environment:
#   RPISENSOR_CONNECT   the Pi, as a Twisted client endpoint
#                       (tcp:host=192.168.0.17:port=22000)
#   RPISENSOR_INTERVAL  seconds between polls (2)
import os

from rpisensor.app.tac import application as role_application

CONNECT = os.environ.get("RPISENSOR_CONNECT", "tcp:host=192.168.0.17:port=22000")
INTERVAL = os.environ.get("RPISENSOR_INTERVAL", "2")

ARGUMENTS = [
    "poll",
    "--connect", CONNECT,
    "--interval", INTERVAL,
    "--command", "go",
    # No reply within this many seconds: the link is dead, reconnect.
    "--timeout", "10",
    # Longest wait between reconnection attempts.
    "--max-delay", "60",
]

application = role_application("rpisensor-poll", ARGUMENTS)
