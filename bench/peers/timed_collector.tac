# The collector of bench/streams.py's latency scenario (L3): the collect role
# as `twistd rpisensor collect` builds it (build_collect_service, the same
# listener, store and writer thread), embedded the documented way, with an
# on_reading callback. The collector calls it with each v2 reading once the
# store has made it durable (the moment it may acknowledge it); the callback
# appends "device seq time.time()" to BENCH_COMMITS.
#
#   BENCH_LISTEN=tcp:0:interface=127.0.0.1 BENCH_STORE=x.sqlite BENCH_COMMITS=commits.txt \
#       twistd -n --pidfile= -y bench/peers/timed_collector.tac
import os
import time

from twisted.application.service import Application
from twisted.internet import reactor

from rpisensor.net.limits import ListenSettings
from rpisensor.roles.collect.collector import build_collect_service

commits = open(os.environ["BENCH_COMMITS"], "a", buffering=1)


def committed(reading):
    commits.write(f"{reading.device} {reading.seq} {time.time():.6f}\n")


application = Application("rpisensor-collect-timed")
build_collect_service(
    reactor, os.environ["BENCH_STORE"], ListenSettings((os.environ["BENCH_LISTEN"],)), on_reading=committed
).setServiceParent(application)
