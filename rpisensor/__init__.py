"""
rpisensor: a Raspberry Pi's sensors on the network, as one Twisted application.

Messages are UTF-8 text ended by one NUL byte, compatible with the "TCP/IP
communication" tutorial's programs and its tcpcom library.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
