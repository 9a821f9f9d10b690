"""
The collector role (the tutorial's DataServer3 on a PC): accept any number
of reporters, log each message with its peer and time, and store it.
"""
