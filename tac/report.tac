# The Pi side of the tutorial's Experiment 3: push the button's state to a PC
# server, anywhere on the Internet.  Run it with:  twistd --pidfile=report.pid -ny tac/report.tac
#
# Every reading waits in the outbox (an SQLite file) until the collector has
# stored it, so none is lost while the link is down or the Pi restarts. A
# server that does not speak rpisensor v2 (the tutorial's DataServer3) gets
# the plain text instead, after one 'hello' line it prints once.
#
# Settings below may also come from the environment:
#   RPISENSOR_CONNECT   the PC, as a Twisted client endpoint
#                       (tcp:host=192.168.0.111:port=22000)
#   RPISENSOR_GPIO      auto, rpi or sim (auto)
#   RPISENSOR_INTERVAL  seconds between readings (2)
#   RPISENSOR_OUTBOX    the outbox file, relative to the state directory
#                       (systemd's StateDirectory=, else the working directory),
#                       or 'none' to keep it in memory only (rpisensor-outbox.sqlite)
import os

from rpisensor.app.tac import application as role_application

CONNECT = os.environ.get("RPISENSOR_CONNECT", "tcp:host=192.168.0.111:port=22000")
GPIO = os.environ.get("RPISENSOR_GPIO", "auto")
INTERVAL = os.environ.get("RPISENSOR_INTERVAL", "2")
OUTBOX = os.environ.get("RPISENSOR_OUTBOX", "rpisensor-outbox.sqlite")

ARGUMENTS = [
    "report",
    "--connect", CONNECT,
    "--gpio", GPIO,
    "--interval", INTERVAL,
    # The tutorial's button: BOARD pin 24, pull-up, pressed = low.
    "--input", "button=24,pull=up,active=low",
    # Record and send only changes (plain text: plus the full state every minute):
    # "--on-change", "--heartbeat", "60",
    "--outbox", OUTBOX,
    # The outbox's bound (entries, or a size such as 50MB; beyond it the oldest
    # go and the collector records a gap), and how often it reaches the disk
    # (batch: an fsync a second; full: every reading, for zero loss at a power cut):
    # "--outbox-max", "1000000", "--outbox-sync", "batch",
    # At most this many readings sent and not yet acknowledged:
    # "--window", "1000",
    # This Pi's name in the stream (default: host name and machine id, or the
    # CN of the client certificate given in a tls: --connect):
    # "--device", "pi-kitchen",
    # auto: offer v2, else plain text; 2: v2 only; 1: plain text only, no 'hello':
    # "--protocol", "auto", "--hello-timeout", "3",
    # Where 'rpisensor query unix:path=rpisensor-report.sock status' asks
    # ('none': nowhere):
    # "--status-listen", "unix:rpisensor-report.sock",
]

application = role_application("rpisensor-report", ARGUMENTS)
