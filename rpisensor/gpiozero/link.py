"""
The gpiozero pin factory's link to C{serve}: a blocking front on Twisted.

gpiozero is a blocking API: a program sets C{led.on()} and expects the pin
driven when it returns, from whatever thread it runs in, and gpiozero calls
the program's callbacks (C{when_pressed}) in threads of its own. rpisensor's
client side is Twisted: endpoints (C{tls:} with its certificate checks
included), reconnection with backoff, dead-peer detection, the v2 frames and
the shared follower of a stream. Writing all that again on plain sockets
would be a second client to keep right, so the link runs a reactor in a
thread instead:

  - its own reactor instance, not the global one: the program may run a
    reactor of its own (or a test runner may), and a stopped reactor
    cannot run again, while each factory's link starts and stops its own;
  - the program's calls cross to it with C{callFromThread} and wait on a
    queue, always with a timeout, so a dead link cannot hang a program;
  - what the Pi pushes comes back through one dispatcher thread, in order:
    a callback that is slow, or that drives an output (and so waits on the
    reactor), never stalls the network side.

Two connections: commands (C{pins}, C{set}, C{pwm}) go over one, since a
connection that subscribes takes nothing else; the other follows the Pi's
stream (L{rpisensor.remote.follow}) with a live view: the state of every
input, output and sensor, then each change as the Pi records it. Both
reconnect by themselves.

An output the program drives off its safe level is held with a deadman:
every command carries C{ttl=}, renewed every third of it while the program
runs and the link is up. If the program dies, hangs, or the link is cut,
the Pi returns the output to its safe level within C{ttl} (at once when the
connection closes); when the link returns, held levels are driven again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rpisensor.gpiozero.endpoint import build_endpoint
from rpisensor.gpiozero.threads import CallTimeout, Dispatcher, ReactorThread, forward_log_to_stdlib
from rpisensor.lograte import RateLimitedLog
from rpisensor.net.reconnect import reconnecting_client
from rpisensor.net.request import RequestProtocol
from rpisensor.remote.follow import Audience, FollowFactory
from rpisensor.stream.heartbeat import interval_for
from rpisensor.wire import layout as wire_layout
from rpisensor.wire import v2

_log = Logger(namespace="rpisensor.gpiozero")

#: Seconds between two C{ping}s on the command connection: well within C{serve}'s
#: default C{--idle-timeout} (300 s), so a program that only reads keeps it.
KEEPALIVE = 60.0


class LinkError(ConnectionError):
    """The Pi cannot be reached, or did not answer in time; the message says what to check."""


class CommandRefused(RuntimeError):
    """The Pi answered a command with C{error: ...}; the message is its reason."""


@dataclass(frozen=True)
class LinkSettings:
    """
    @ivar endpoint: the Pi, as a Twisted client endpoint string.
    @ivar timeout: seconds to wait for the first connection, and for each reply.
    @ivar ttl: seconds a driven output holds its level without a renewal (the deadman).
    @ivar dead_peer_timeout: seconds without a word from the Pi before a link counts as dead.
    @ivar max_delay: the longest wait between two reconnection attempts.
    """

    endpoint: str
    timeout: float = 10.0
    ttl: float = 2.0
    dead_peer_timeout: float = 30.0
    max_delay: float = 30.0


class _CommandProtocol(RequestProtocol):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.link._command_connected(self)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        super().connectionLost(reason)
        self.factory.link._command_lost(self)


class _CommandFactory(Factory):
    protocol = _CommandProtocol
    noisy = False

    def __init__(self, link: PiLink) -> None:
        self.link = link
        self.clock = link.reactor


class _Mirror(Audience):
    """The follower's news, handed to the link (in the reactor's thread)."""

    def __init__(self, link: PiLink) -> None:
        self._link = link

    def welcomed(self, welcome: v2.Welcome, after: int | None) -> None:
        self._link._following(welcome)

    def reading(self, reading: v2.Reading, device: str) -> None:
        self._link._reading(reading)

    def lost(self) -> None:
        self._link._follow_lost()

    def unusable(self, why: str) -> None:
        _log.warn("The Pi at {endpoint} does not stream its changes: {why}", endpoint=self._link.endpoint, why=why)


@dataclass
class _Held:
    """An output the program drives: the command that drives it, renewed while its level is not safe."""

    command: str
    safe: bool
    ttl: float
    renewal: LoopingCall | None = None

    def wire(self) -> str:
        return self.command if self.safe else f"{self.command} ttl={self.ttl:g}"


#: Listeners get each reading, and the monotonic time it arrived, in the dispatcher thread.
Listener = Callable[[v2.Reading, float], object]

class PiLink:
    """
    One program's link to one C{serve}. L{open} it, then use it from any
    thread but its own two.

    @ivar layout: the Pi's pins (L{rpisensor.wire.layout.PinLayout}), once open.
    """

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self._thread = ReactorThread("rpisensor-link")
        self.reactor = self._thread.reactor
        self.layout: wire_layout.PinLayout | None = None
        self._dispatcher = Dispatcher("rpisensor-events")
        self._latest: dict[str, tuple[v2.Reading, float]] = {}
        self._known = threading.Condition()
        self._closed = False
        # In the reactor's thread only:
        self._commands = None
        self._follower = None
        self._command_protocol: _CommandProtocol | None = None
        self._held: dict[str, _Held] = {}
        self._keepalive = LoopingCall(self._ping)
        self._keepalive.clock = self.reactor
        self._story = RateLimitedLog(self.reactor, _log)
        self._was_following = False
        self._first_welcome: Deferred | None = None

    # -- opening and closing (the program's threads) --------------------------------------

    def open(self) -> wire_layout.PinLayout:
        """
        Start the link's threads, connect, learn the Pi's pins and start
        following its changes.

        @raise LinkError: the Pi cannot be reached, or answered nothing usable.
        """
        forward_log_to_stdlib()
        self._thread.start()
        self._dispatcher.start()
        try:
            self.layout = self._call(self._open, timeout=self.settings.timeout * 3)
        except BaseException:
            self.close()
            raise
        return self.layout

    def close(self) -> None:
        """
        Drive every output the program holds back to its safe level, close
        both connections, stop the threads. Idempotent; later calls to the
        link are refused.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread.alive:
            try:
                self._call(self._shut, timeout=self.settings.timeout, closing=True)
            except Exception as e:
                _log.warn("Closing the link to {endpoint}: {error}", endpoint=self.endpoint, error=str(e))
            self._thread.stop(self.settings.timeout)
        self._dispatcher.stop(self.settings.timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- what the program asks (its threads) ----------------------------------------------

    def latest(self, name: str, wait: bool = True) -> v2.Reading | None:
        """
        The newest reading of C{name} (an input, output or sensor); with
        C{wait}, wait for the first one, up to the timeout.

        @raise LinkError: none came in time.
        """
        with self._known:
            if wait:
                self._known.wait_for(lambda: name in self._latest or self._closed, self.settings.timeout)
            known = self._latest.get(name)
        if known is None and wait:
            raise LinkError(
                f"no reading of {name} came from the Pi at {self.endpoint} within "
                f"{self.settings.timeout:g} s; is its link up?"
            )
        return known[0] if known is not None else None

    def add_listener(self, listener: Listener) -> None:
        """Call C{listener(reading, ticks)} with each reading, in the dispatcher thread."""
        self._dispatcher.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._dispatcher.remove_listener(listener)

    def command(self, text: str) -> str:
        """
        Send one command to C{serve} and return its reply, e.g.
        C{factory.link.command("outputs")}.

        @raise LinkError: the link is down, or no reply came within the timeout.
        """
        return self._call(self._command, text)

    def drive(self, name: str, command: str, safe: bool, ttl: float) -> None:
        """
        Send C{command} (C{set led on}, C{pwm led 40}) and hold its level:
        with C{ttl=}, renewed, unless C{safe} (the output's safe level). While
        the link is down the level is remembered and driven when it returns.

        @raise CommandRefused: the Pi refused it (no control grant, claimed by
            another client, too many commands); the level is not held.
        @raise LinkError: no reply within the timeout.
        """
        self._call(self._drive, name, _Held(command, safe, ttl))

    def release(self, name: str, command: str) -> None:
        """
        Stop holding C{name}, and send C{command} (its safe level) if the link
        is up; nothing once the link is closed (closing made it safe).
        """
        if not self._closed:
            self._call(self._release, name, command)

    def _call(self, f, *args, timeout: float | None = None, closing: bool = False):
        """C{f(*args)} in the reactor's thread, waited for at most C{timeout} seconds (the link's own timeout)."""
        if self._closed and not closing:
            raise LinkError(f"the link to {self.endpoint} is closed")
        timeout = self.settings.timeout if timeout is None else timeout
        try:
            return self._thread.call(f, *args, timeout=timeout)
        except CallTimeout:
            raise LinkError(f"no answer from the Pi at {self.endpoint} within {timeout:g} s") from None

    # -- the reactor's side -----------------------------------------------------------------

    async def _open(self) -> wire_layout.PinLayout:
        from rpisensor.roles.query import _explain

        settings = self.settings
        try:
            endpoint = build_endpoint(self.reactor, self.endpoint)
        except (OSError, ValueError, KeyError) as e:
            raise LinkError(f"rpisensor: {self.endpoint}: {e}") from None
        self._commands = reconnecting_client(
            self.reactor, endpoint, _CommandFactory(self), max_delay=settings.max_delay,
            dead_peer_timeout=settings.dead_peer_timeout, description=self.endpoint,
        )  # fmt: skip
        self._commands.startService()
        try:
            protocol = await self._commands.whenConnected(failAfterFailures=1).addTimeout(
                settings.timeout, self.reactor
            )
            reply = await protocol.request(wire_layout.VERB).addTimeout(settings.timeout, self.reactor)
        except Exception:
            raise LinkError(f"rpisensor: {_explain(Failure(), self.endpoint, settings.timeout)}") from None
        try:
            layout = wire_layout.parse(reply)
        except wire_layout.LayoutError as e:
            raise LinkError(f"rpisensor: {self.endpoint}: {e}") from None
        follow = FollowFactory(_Mirror(self), self.reactor, heartbeat=interval_for(settings.dead_peer_timeout),
                               live_after_gap=True)  # fmt: skip
        self._first_welcome = Deferred()
        self._follower = reconnecting_client(
            self.reactor, endpoint, follow, max_delay=settings.max_delay,
            dead_peer_timeout=settings.dead_peer_timeout, description=self.endpoint,
        )  # fmt: skip
        self._follower.startService()
        try:
            await self._first_welcome.addTimeout(settings.timeout, self.reactor)
        except Exception:
            raise LinkError(
                f"rpisensor: {self.endpoint} does not stream its changes (no welcome within "
                f"{settings.timeout:g} s): is it rpisensor serve, with its journal?"
            ) from None
        self._keepalive.start(KEEPALIVE, now=False)
        return layout

    async def _shut(self) -> None:
        # Every level held is a deadman: closing the command connection makes each safe at once.
        for held in self._held.values():
            self._stop_holding(held)
        self._held.clear()
        if self._keepalive.running:
            self._keepalive.stop()
        for service in (self._follower, self._commands):
            if service is not None and service.running:
                await service.stopService()

    def _command(self, text: str) -> Deferred:
        protocol = self._command_protocol
        if protocol is None:
            raise LinkError(f"the link to {self.endpoint} is down (reconnecting)")
        return protocol.request(text)

    def _drive(self, name: str, held: _Held) -> Deferred:
        previous = self._held.pop(name, None)
        if previous is not None:
            self._stop_holding(previous)
        self._held[name] = held
        if not held.safe:
            held.renewal = LoopingCall(self._renew, name, held)
            held.renewal.clock = self.reactor
            held.renewal.start(held.ttl / 3, now=False)
        protocol = self._command_protocol
        if protocol is None:
            self._story.warn(
                "The link to {endpoint} is down: {name} is driven ({command}) when it returns.",
                key=f"down {name}", endpoint=self.endpoint, name=name, command=held.command,
            )  # fmt: skip
            return succeed(None)
        d = protocol.request(held.wire()).addTimeout(self.settings.timeout, self.reactor)
        return d.addCallbacks(self._driven, self._not_sent, callbackArgs=(name, held), errbackArgs=(name,))

    def _driven(self, reply: str, name: str, held: _Held) -> None:
        if reply.startswith("error:"):
            if self._held.get(name) is held:
                self._stop_holding(self._held.pop(name))
            raise CommandRefused(f"the Pi at {self.endpoint} refused {held.wire()!r}: {reply[len('error:'):].strip()}")

    def _not_sent(self, failure: Failure, name: str):
        if failure.check(ConnectionDone, ConnectionLost):
            return None  # the link dropped on the way: driven again when it returns
        if failure.check(TimeoutError):
            raise LinkError(f"no answer from the Pi at {self.endpoint} within {self.settings.timeout:g} s "
                            f"to driving {name}")  # fmt: skip
        return failure

    def _release(self, name: str, command: str) -> Deferred:
        held = self._held.pop(name, None)
        if held is not None:
            self._stop_holding(held)
        protocol = self._command_protocol
        if held is None or held.safe or protocol is None:
            return succeed(None)
        d = protocol.request(command).addTimeout(self.settings.timeout, self.reactor)
        return d.addErrback(lambda _: None)  # the deadman makes it safe anyway

    def _renew(self, name: str, held: _Held) -> None:
        protocol = self._command_protocol
        if protocol is None or protocol.outstanding:
            return  # the link is down, or the last renewal has no reply yet
        protocol.request(held.wire()).addCallbacks(self._renewed, lambda _: None, callbackArgs=(name,))

    def _renewed(self, reply: str, name: str) -> None:
        if reply.startswith("error:"):
            self._story.warn(
                "The Pi at {endpoint} refused to keep {name} driven: {reply}",
                key=f"renewal {name}", endpoint=self.endpoint, name=name, reply=reply,
            )  # fmt: skip

    @staticmethod
    def _stop_holding(held: _Held) -> None:
        if held.renewal is not None and held.renewal.running:
            held.renewal.stop()
        held.renewal = None

    def _ping(self) -> None:
        protocol = self._command_protocol
        if protocol is not None and not protocol.outstanding:
            protocol.request("ping").addErrback(lambda _: None)

    def _command_connected(self, protocol: _CommandProtocol) -> None:
        self._command_protocol = protocol
        for name, held in self._held.items():
            if not held.safe:  # the Pi made it safe while the link was down: drive it again
                protocol.request(held.wire()).addCallbacks(self._renewed, lambda _: None, callbackArgs=(name,))

    def _command_lost(self, protocol: _CommandProtocol) -> None:
        if self._command_protocol is protocol:
            self._command_protocol = None

    def _following(self, welcome: v2.Welcome) -> None:
        if self._first_welcome is not None and not self._first_welcome.called:
            self._first_welcome.callback(welcome)
        elif not self._was_following:
            self._story.info("The link to {endpoint} is back: following its pins again.", endpoint=self.endpoint)
        self._was_following = True

    def _follow_lost(self) -> None:
        if self._was_following and not self._closed:
            self._story.warn(
                "Lost the link to {endpoint}: its pins keep their last known state until it returns; "
                "reconnecting.",
                endpoint=self.endpoint,
            )  # fmt: skip
        self._was_following = False

    def _reading(self, reading: v2.Reading) -> None:
        ticks = time.monotonic()
        with self._known:
            self._latest[reading.sensor] = (reading, ticks)
            self._known.notify_all()
        self._dispatcher.put(reading, ticks)
