# The PC side of the tutorial's Experiment 3: accept Pis that report, log and
# store what they send.  Run it with:  twistd -ny tac/collect.tac
#
# Settings below may also come from the environment:
#   RPISENSOR_LISTEN  where to listen, a Twisted endpoint   (tcp:22000)
#   RPISENSOR_STORE   .jsonl or .sqlite/.db file            (readings.jsonl)
import os

from twisted.application.service import Application

from rpisensor.app.tap import Options, makeService

LISTEN = os.environ.get("RPISENSOR_LISTEN", "tcp:22000")
STORE = os.environ.get("RPISENSOR_STORE", "readings.jsonl")

options = Options()
options.parseOptions([
    "collect",
    "--listen", LISTEN,
    "--store", STORE,
])

application = Application("rpisensor-collect")
makeService(options).setServiceParent(application)
