"""
Named inputs and their readings: the input specs, the reader that shares
reads and never blocks the reactor, and its thread pool.
"""
