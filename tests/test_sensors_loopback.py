"""
Measurement sensors over real loopback TCP, in process with the real reactor
(pytest-twisted): L{rpisensor.testing.start_server} with sensors on a
L{FakeSysfs} tree answers C{read NAME} from its real read pool, and a
sensor's file changing is seen by the next read. Every wait is for a
condition; nothing asserts a duration.
"""

from __future__ import annotations

import pytest_twisted

from rpisensor.sensing.measure import parse_sensor
from rpisensor.testing import FakeSysfs, send_message, start_server
from rpisensor.testing._sysfs import _crc8

ROOM = "28-0316a2795aff"


def test_crc8_matches_a_real_ds18b20() -> None:
    """The fake scratchpad's CRC is the sensor's: a real DS18B20's bytes give its real CRC."""
    assert _crc8(bytes.fromhex("72014b467fff0e10")) == 0x57
    assert _crc8(bytes.fromhex("50054b467fff0c10")) == 0x1C


@pytest_twisted.ensureDeferred
async def test_read_sensors_over_loopback(reactor, tmp_path):
    sys = FakeSysfs(tmp_path / "sys")
    sys.ds18b20(ROOM, 22.5625)
    sys.iio(0, "pressure", "101.325", name="bme280")
    sys.cpu(48.312)
    sensors = [parse_sensor(text, sys.root) for text in (f"room=w1:{ROOM}", "p=iio:bme280:pressure", "cpu=cpu")]
    server = await start_server(reactor=reactor, sensors=sensors)
    try:
        assert await send_message(server.port, "read room", reactor) == "22.56 °C"
        assert await send_message(server.port, "read p", reactor) == "1013.25 hPa"
        assert await send_message(server.port, "read cpu", reactor) == "48.31 °C"
        assert await send_message(server.port, "list", reactor) == "button room(w1,°C) p(iio,hPa) cpu(cpu,°C)"
        sys.ds18b20(ROOM, -10.125, crc_ok=False)
        reply = await send_message(server.port, "read room", reactor)
        assert reply == "error: reading failed: room: the DS18B20's CRC check failed (a bad contact or a long cable?)"
        assert await send_message(server.port, "go", reactor) == "Button released"
        sys.ds18b20(ROOM, -10.125)
        assert await send_message(server.port, "read room", reactor) == "-10.12 °C"
        sys.ds18b20(ROOM, 85.0)
        reply = await send_message(server.port, "read room", reactor)
        assert reply.startswith("error: reading failed: room: the DS18B20 reports 85.0 °C, its power-on value"), reply
    finally:
        await server.stop()
