"""
The plain paho-mqtt publisher a user writes for the MQTT benchmark (M1): a
script on the Pi that publishes readings with QoS 1, as paho's own examples
do: C{loop_start()} (paho's network thread), C{publish()} in a loop, then
wait for the last ones (and for the oldest, when 10,000 wait: see L{MAX_WAITING}). paho's defaults: 20 messages in flight, the rest
queued in memory. Each message is the same JSON the reporter's stream topic
carries, so the broker and the network see the same bytes.

    python bench/peers/paho_publisher.py PORT TOPIC COUNT
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque

import paho.mqtt.client as mqtt

#: paho's packet ids are 16 bits: with more than 65,535 messages queued, publish() fails
#: (MQTT_ERR_QUEUE_SIZE). A script that publishes faster than the broker acknowledges
#: waits for the oldest ones first; this one keeps at most this many waiting.
MAX_WAITING = 10_000


def main() -> None:
    port, topic, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-plain-paho", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.time()
    waiting: deque = deque()
    for seq in range(1, count + 1):
        reading = {"kind": "reading", "device": "bench-paho", "stream": "0123456789abcdef", "seq": seq,
                   "ts": "2026-12-01T19:33:25.123Z", "synced": True, "sensor": "button", "value": seq % 2,
                   "unit": None, "text": "Button pressed" if seq % 2 else "Button released"}  # fmt: skip
        waiting.append(client.publish(topic, json.dumps(reading, separators=(",", ":")), qos=1))
        if len(waiting) > MAX_WAITING:
            waiting.popleft().wait_for_publish()
    for info in waiting:
        info.wait_for_publish()
    print(f"PAHO-DONE {count} {time.time() - start:.3f}", flush=True)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
