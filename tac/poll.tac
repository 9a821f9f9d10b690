# The PC side of the tutorial's Experiments 1 and 2: ask a Pi for its button
# every 2 seconds and log each reply.  Run it with:  twistd -ny tac/poll.tac
#
# Settings below may also come from the environment:
#   RPISENSOR_CONNECT   the Pi, as a Twisted client endpoint
#                       (tcp:host=192.168.0.17:port=22000)
#   RPISENSOR_INTERVAL  seconds between polls (2)
import os

from twisted.application.service import Application

from rpisensor.app.tap import Options, makeService

CONNECT = os.environ.get("RPISENSOR_CONNECT", "tcp:host=192.168.0.17:port=22000")
INTERVAL = os.environ.get("RPISENSOR_INTERVAL", "2")

options = Options()
options.parseOptions([
    "poll",
    "--connect", CONNECT,
    "--interval", INTERVAL,
    "--command", "go",
    # No reply within this many seconds: the link is dead, reconnect.
    "--timeout", "10",
    # Longest wait between reconnection attempts.
    "--max-delay", "60",
])

application = Application("rpisensor-poll")
makeService(options).setServiceParent(application)
