"""
Event streams, every reading delivered exactly once: the Pi's durable journal
(an outbox for C{report}, a history for C{serve}), the sending and receiving
sides of protocol v2, and what tells a reading's time and its device.
"""
