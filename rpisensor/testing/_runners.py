"""
Runners that make thread-pool reads deterministic: one that runs a job at
once, and one that lets the test decide when each job finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, maybeDeferred


def inline_runner(f, *args) -> Deferred:
    """A runner that calls C{f} at once, in the calling thread."""
    return maybeDeferred(f, *args)


@dataclass
class Job:
    """One call handed to a L{FakeRunner}, and the Deferred its caller holds."""

    f: object
    args: tuple
    deferred: Deferred = field(default_factory=Deferred)

    def run(self) -> None:
        """Run the call now, in this thread, and fire the caller's Deferred."""
        maybeDeferred(self.f, *self.args).chainDeferred(self.deferred)


class FakeRunner:
    """
    A runner that records each job and lets the test decide when it finishes:
    C{runner.jobs[0].run()}, or fire C{runner.jobs[0].deferred} by hand.
    """

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def __call__(self, f, *args) -> Deferred:
        job = Job(f, args)
        self.jobs.append(job)
        return job.deferred

    def run_all(self) -> None:
        """Run every job recorded so far, oldest first, and forget them."""
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job.run()
