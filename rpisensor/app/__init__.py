"""
The application around the roles: the twistd plugin's options and service
(C{tap}), the C{rpisensor} command (C{cli}), the order services stop in, and
a clean exit on signals.
"""
