"""
The polling client role (the tutorial's DataClient1/2 on a PC): send C{go}
every few seconds and log each reply; reconnect whenever the link drops.
"""
