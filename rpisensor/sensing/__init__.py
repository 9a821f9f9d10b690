"""
Named inputs and sensors and their readings: the input specs, the
measurement sensors (sysfs files: DS18B20, IIO, any file, the CPU), the
reader that shares reads and never blocks the reactor, and its thread pools.
"""
