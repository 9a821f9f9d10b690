# Kept tiny on purpose: twistd imports every plugin module whenever it lists
# plugins, so everything heavy lives in rpisensor.app.tap, imported only on use.
from twisted.application.service import ServiceMaker

rpisensor = ServiceMaker(
    "rpisensor",
    "rpisensor.app.tap",
    "Raspberry Pi sensors over NUL-terminated TCP: serve, poll, report, collect.",
    "rpisensor",
)
