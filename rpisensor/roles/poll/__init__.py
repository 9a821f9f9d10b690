"""
The polling client role (the tutorial's DataClient1/2 on a PC): send C{go}
every few seconds and log each reply; reconnect whenever the link drops.
With C{--subscribe}, follow the server's stream of readings instead.
"""


def __getattr__(name: str):
    """
    C{from rpisensor.roles.poll import build_poll_service, PollSettings}, loaded
    on first use: the options (which C{--help} imports) must not pull in the network stack.
    """
    if name in ("build_poll_service", "PollSettings", "PollService"):
        from rpisensor.roles.poll import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
