# The sensor server of the tutorial's Experiments 1 and 2, as a tac file to
# copy and edit.  Run it with:  twistd --pidfile=serve.pid -ny tac/serve.tac
#
# Settings below may also come from the environment, handy under systemd:
#   RPISENSOR_LISTEN   where to listen, a Twisted endpoint   (tcp:22000)
#   RPISENSOR_GPIO     auto, rpi or sim                      (auto)
#   RPISENSOR_JOURNAL  the SQLite file keeping every change for subscribers,
#                      relative to the state directory (systemd's StateDirectory=,
#                      else the working directory), or none for memory only
#                      (rpisensor-journal.sqlite)
import os

from rpisensor.app.tac import application as role_application

LISTEN = os.environ.get("RPISENSOR_LISTEN", "tcp:22000")
GPIO = os.environ.get("RPISENSOR_GPIO", "auto")
JOURNAL = os.environ.get("RPISENSOR_JOURNAL", "rpisensor-journal.sqlite")

ARGUMENTS = [
    "serve",
    "--listen", LISTEN,
    "--gpio", GPIO,
    # The tutorial's button: BOARD pin 24, pull-up, pressed = low.
    "--input", "button=24,pull=up,active=low",
    # Add more inputs, each answered by 'read NAME':
    # "--input", "door=18,pull=up,active=high,on=Door open,off=Door closed",
    # Every change of every input goes into the journal, for subscribers
    # ('subscribe', poll --subscribe): each exactly once, across reconnects.
    "--journal", JOURNAL,
    # How often the inputs are read to see a change (one read per input each time):
    # "--poll-interval", "0.1",
    # The most entries (or bytes: "50MB") the journal keeps; older ones go:
    # "--journal-max", "1000000",
    # batch: one fsync a second (a power cut may lose the last second); full: every commit:
    # "--journal-sync", "batch",
    # This Pi's name in the stream (default: host name and a hash of /etc/machine-id):
    # "--device", "greenhouse",
    # Readings sent to a subscriber and not yet acknowledged:
    # "--window", "1000",
    # Subscribers at once, and how long one may leave its stream unread before it is dropped:
    # "--max-subscribers", "50", "--max-subscriber-lag", "30",
    # Outputs a client may drive ('set led on'; a ttl= makes a deadman), and who may:
    # "--output", "led=12", "--output", "motor=16,ttl=0.5",
    # "--control-allow", "192.168.1.0/24",
]

application = role_application("rpisensor-serve", ARGUMENTS)
