# The PC side of the tutorial's Experiment 3: accept Pis that report, log and
# store what they send.  Run it with:  twistd --pidfile=collect.pid -ny tac/collect.tac
#
# Settings below may also come from the environment:
#   RPISENSOR_LISTEN  where to listen, a Twisted endpoint   (tcp:22000)
#   RPISENSOR_STORE   .jsonl or .sqlite/.db file            (readings.jsonl)
import os

from rpisensor.app.tac import application as role_application

LISTEN = os.environ.get("RPISENSOR_LISTEN", "tcp:22000")
STORE = os.environ.get("RPISENSOR_STORE", "readings.jsonl")

ARGUMENTS = [
    "collect",
    "--listen", LISTEN,
    "--store", STORE,
]

application = role_application("rpisensor-collect", ARGUMENTS)
