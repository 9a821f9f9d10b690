"""
Building blocks of the roles' command lines, each option checked when parsed
so that a mistake is a usage error naming the option. Nothing here imports
the reactor or the network stack, so C{--help} stays fast.
"""

from rpisensor.roles._options.base import FoldedOptions, count, non_negative_float
from rpisensor.roles._options.connect import ConnectOptions
from rpisensor.roles._options.gpio import GPIOOptions
from rpisensor.roles._options.listen import ListenOptions

__all__ = ["ConnectOptions", "FoldedOptions", "GPIOOptions", "ListenOptions", "count", "non_negative_float"]
