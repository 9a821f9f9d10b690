"""
The guest kernel keeps each process's floating-point and vector registers across context
switches: on a host whose XSAVE area is larger than UML's (a CPU with AMX), the kernel restores
them through tests/uml/xstate-restore.patch. Processes that compute with floats while they are
switched among one another must all get the one exact answer.
"""

import math
import os
import struct


def _harmonic(terms: int) -> float:
    total = 0.0
    for i in range(1, terms + 1):
        total += 1.0 / i
        if i % 500 == 0:
            os.sched_yield()    # a context switch in the middle of the sum
    return total


def _in_children(count: int, terms: int) -> list[float]:
    """Run C{_harmonic(terms)} in C{count} forked processes at once; their results."""
    children = []
    for _ in range(count):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.write(write_end, struct.pack("d", _harmonic(terms)))
            os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    results = []
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as pipe:
            results.append(struct.unpack("d", pipe.read())[0])
        assert os.waitpid(pid, 0)[1] == 0
    return results


def test_float_results_survive_context_switches():
    terms = 40_000
    expected = _harmonic(terms)
    assert _in_children(8, terms) == [expected] * 8
    assert math.isclose(expected, math.log(terms) + 0.5772156649 + 1 / (2 * terms), rel_tol=1e-9)
