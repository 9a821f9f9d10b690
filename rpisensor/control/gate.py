"""
What every control command passes, whoever sends it (a TCP client's
C{set}, a web page's switch): its client's rate limit (C{--control-rate})
and the control log, which names who sent each one.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rpisensor.control.controller import who
from rpisensor.control.rate import CommandRate
from rpisensor.lograte import DEFAULT_BURST, DEFAULT_WINDOW, RateLimitedLog

_log = Logger(namespace="rpisensor.control")

#: Senders whose first command of a window is logged whatever others sent, and who are named
#: in the window's summary of what was left out.
MAX_SENDERS = 20
#: Clients without a connection of their own (web pages) whose rate is kept, by address.
MAX_BUCKETS = 256


class ControlLog(RateLimitedLog):
    """
    The control log. Refusals and floods are lines like any other a peer can
    cause (rate-limited by kind). Control commands are logged with who sent
    them, in a bounded number of lines that no client's flood can use up for
    the others: in each window the first command of each sender (its address,
    and its certificate's CN) is logged, up to C{max_senders} senders; the
    senders' further commands share one burst; what is left out is counted
    by sender, and one line when the window ends (or at L{flush}) says who
    sent how many.
    """

    def __init__(
        self,
        clock: IReactorTime,
        logger: Logger = _log,
        burst: int = DEFAULT_BURST,
        window: float = DEFAULT_WINDOW,
        max_senders: int = MAX_SENDERS,
    ) -> None:
        super().__init__(clock, logger, burst, window)
        self.max_senders = max_senders
        self._since: float | None = None
        self._senders: set[str] = set()
        self._shared = 0
        self._left_out: Counter[str] = Counter()
        self._others = 0

    def command(self, who: str, sender: str, command: str) -> bool:
        """Log C{command} from C{who} (C{sender}: who it is, without a port) unless the window is used up."""
        now = self._clock.seconds()
        if self._since is None or now - self._since >= self.window:
            self._summarise_commands(now)
            self._since = now
        first = sender not in self._senders and len(self._senders) < self.max_senders
        if first:
            self._senders.add(sender)
        elif self._shared < self.burst:
            self._shared += 1
        else:
            if sender in self._left_out or len(self._left_out) < self.max_senders:
                self._left_out[sender] += 1
            else:
                self._others += 1
            self.suppressed += 1
            return False
        self._logger.info("Control command from {who}: {command}", who=who, command=command)
        return True

    def _summarise_commands(self, now: float) -> None:
        if self._left_out or self._others:
            named = ", ".join(f"{count} from {sender}" for sender, count in self._left_out.most_common())
            if self._others:
                named += f", {self._others} from other senders"
            self._logger.info(
                "{count} more control commands were left out of the log in the last {seconds:.0f} s: {senders}",
                count=sum(self._left_out.values()) + self._others, seconds=now - self._since, senders=named,
            )  # fmt: skip
        self._senders = set()
        self._shared = 0
        self._left_out = Counter()
        self._others = 0

    def flush(self) -> None:
        super().flush()
        if self._since is not None:
            self._summarise_commands(self._clock.seconds())


def sender(driver) -> str:
    """Who a client is for the control log, without its port: its C{sender}, else its L{who}."""
    return getattr(driver, "sender", None) or who(driver)


class ControlGate:
    """
    The rate limit and the log every control command passes.

    @param rate: commands a client may send a second (C{--control-rate}):
        a TCP client's per connection, a web page's per address.
    """

    def __init__(self, clock: IReactorTime, rate: float, log: ControlLog | None = None) -> None:
        self.clock = clock
        self.rate = rate
        self.log = log if log is not None else ControlLog(clock)
        self._by_address: OrderedDict[str, CommandRate] = OrderedDict()

    def bucket(self) -> CommandRate:
        """A new client's rate limit (a TCP connection keeps its own)."""
        return CommandRate(self.clock, self.rate)

    def bucket_for(self, address: str) -> CommandRate:
        """The rate limit of clients at C{address} (web pages: a request each); the latest L{MAX_BUCKETS} kept."""
        bucket = self._by_address.pop(address, None)
        if bucket is None:
            bucket = self.bucket()
            while len(self._by_address) >= MAX_BUCKETS:
                self._by_address.popitem(last=False)
        self._by_address[address] = bucket
        return bucket

    def admit(self, bucket: CommandRate, driver, verb: str, args: list[str]) -> str | None:
        """
        C{None} once the command may be carried out (it is logged); else why
        not, for the client (it is not carried out).
        """
        if not bucket.allow():
            self.log.warn(
                "Too many control commands from {who}: more than {rate:g} a second (--control-rate); "
                "the extra ones are refused.",
                key="control rate", who=who(driver), rate=bucket.rate,
            )  # fmt: skip
            return (
                f"{verb}: too many control commands: at most {bucket.rate:g} a second (--control-rate); "
                "this one was not carried out"
            )
        self.log.command(who(driver), sender(driver), " ".join([verb, *args]))
        return None
