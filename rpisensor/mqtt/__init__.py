"""
The Pi on MQTT (C{report --mqtt URL}): every reading of the outbox published
with QoS 1 and let go of only on the broker's acknowledgement, each input's,
sensor's and output's latest state retained for Home Assistant, which finds
them by its MQTT discovery, and outputs driven from it where the Pi allows.

Modules, each with one job:

  - L{settings}: the broker's address, TLS and credentials, the topics' prefix.
  - L{options}: C{report}'s command-line options for all of it.
  - L{topics}: the topic names, in one place (docs/reference/mqtt.md has their reference).
  - L{messages}: what is published: the stream's JSON, the states' payloads.
  - L{discovery}: Home Assistant's discovery configs, and removing stale ones.
  - L{client}: one MQTT connection, paho-mqtt driven by the reactor.
  - L{outgoing}: retained messages (states, availability, configs) with few in flight.
  - L{publisher}: the outbox to the stream topic, windowed, acknowledged on PUBACK.
  - L{control}: switch commands from Home Assistant to the outputs.
  - L{link}: the reconnecting service that ties them to the broker.
  - L{report}: how C{report} builds it from its options.

paho-mqtt is imported by L{client} only, and only when C{--mqtt} is given.
"""
