"""
Opening the pins a role reads, as its options say.
"""

from __future__ import annotations

from rpisensor.hw import GPIOError, choose_backend, open_chosen
from rpisensor.roles._options import GPIOOptions


def open_inputs(options: GPIOOptions, reactor):
    """
    Open the backend the options name and a reader for their inputs and sensors; return
    C{(reader, pool service)}. The pool service logs, when the role starts,
    which pins are read and why, and every input's wiring. Stops the program
    with one line saying why if the backend cannot work here.
    """
    from rpisensor.sensing.pool import open_reader

    try:
        choice = choose_backend(options["gpio"])
        backend = open_chosen(
            choice,
            options["numbering"],
            latency=options["sim-latency"],
            fail_every=options["sim-fail-every"],
        )
        return open_reader(
            reactor, backend, options["inputs"], options["read-threads"], options["max-age"],
            options["read-timeout"], backend_choice=choice, sensors=options["sensors"],
        )  # fmt: skip
    except GPIOError as e:
        raise SystemExit(
            f"rpisensor: cannot use GPIO: {e}. (To run without real pins: --gpio sim.)"
        ) from None
