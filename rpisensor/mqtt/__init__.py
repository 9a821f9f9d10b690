"""
MQTT, both ways. The Pi on MQTT (C{report --mqtt URL}): every reading of the outbox published
with QoS 1 and let go of only on the broker's acknowledgement, each input's,
sensor's and output's latest state retained for Home Assistant, which finds
them by its MQTT discovery, and outputs driven from it where the Pi allows.
Collectors on MQTT (C{collect --mqtt URL}): the Pis' streams from a shared
subscription into the store, acknowledged once committed; and C{collect
--publish-mqtt URL}, what reporters send over TCP published to a broker.

Modules, each with one job:

  - L{settings}: the broker's address, TLS and credentials, the topics' prefix.
  - L{topics}: the topic names, in one place (docs/reference/mqtt.md has their reference).
  - L{messages}: what is published: the stream's JSON, the states' payloads.
  - L{discovery}: Home Assistant's discovery configs, and removing stale ones.
  - L{client}: one MQTT connection, paho-mqtt driven by the reactor.
  - L{outgoing}: retained messages (states, availability, configs) with few in flight.
  - L{publisher}: the outbox to the stream topic, windowed, acknowledged on PUBACK.
  - L{control}: switch commands from Home Assistant to the outputs.
  - L{session}: a connection to the broker kept up while the service runs (the Pi's and a collector's).
  - L{link}: the Pi's session, which ties the modules above to the broker.
  - L{ingest}: the shared subscription's readings into the store, each once.
  - L{acks}: a collector's acks to the Pis, once their database committed.
  - L{bridge}: what a collector takes over TCP, published as a Pi would.

The command-line options are in L{rpisensor.roles._options.mqtt}, and how C{report}
builds the link from them in L{rpisensor.roles.report.mqtt} (C{collect}: in
L{rpisensor.roles.collect.mqtt}). paho-mqtt is imported
by L{client} only, and only when C{--mqtt} is given.
"""
