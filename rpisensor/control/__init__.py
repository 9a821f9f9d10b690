"""
Remote control: the outputs a client may drive (C{serve --output}), their
safe states and deadman timers, who may drive them, and how fast.
"""
