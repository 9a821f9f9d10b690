"""
The command line of C{serve}.
"""

from __future__ import annotations

from twisted.python import usage

from rpisensor.roles._options import GPIOOptions, ListenOptions


class ServeOptions(GPIOOptions, ListenOptions):
    """C{serve}: answer clients' commands with the inputs' state."""

    synopsis = "[options]"
    longdesc = (
        "Listen for clients and answer 'go' with the first input's text ('Button pressed' "
        "or 'Button released'), as the tutorial's DataServer1 does, to any number of clients. "
        "Also: 'read NAME', 'list', 'ping', 'help'; with simulated pins, 'sim NAME press' from "
        "this machine. Example: twistd -n rpisensor serve --listen tcp:22000 --input button=24"
    )

    def __init__(self) -> None:
        super().__init__()
        self["sim-patterns"] = []

    def opt_sim_pattern(self, value: str) -> None:
        """
        Simulated pins only: press and release an input by itself, for demos
        (repeatable): NAME=ACTIVE_SECONDS,INACTIVE_SECONDS.
        Example: --sim-pattern button=0.5,2
        """
        from rpisensor.roles.serve.simulate import parse_pattern

        try:
            self["sim-patterns"].append(parse_pattern(value))
        except ValueError as e:
            raise usage.UsageError(f"--sim-pattern: {e}") from None

    def postOptions(self) -> None:
        super().postOptions()
        names = {spec.name for spec in self["inputs"]}
        for pattern in self["sim-patterns"]:
            if pattern.name not in names:
                raise usage.UsageError(
                    f"--sim-pattern: no input named {pattern.name!r}; inputs are: {', '.join(names)}"
                )
        if self["sim-patterns"] and self["gpio"] not in ("sim", "auto"):
            raise usage.UsageError("--sim-pattern needs simulated pins (--gpio sim)")
