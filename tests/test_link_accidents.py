"""
The stream link against what happens to real fleets (L{tests.link_world}: real
reporters and a real collector over iosim connections): a late answer, a Pi
restored from an older SD image, two Pis cloned from one image, a stranger
naming someone's stream, a collector restored from a backup; and a property
test that mixes them all with cuts and restarts. The invariant: every reading
a Pi holds is stored once, and nothing is stored twice.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rpisensor.stream.sender import LOST_BY_COLLECTOR
from rpisensor.wire import v2
from tests.link_world import HELLO_TIMEOUT, Pi, Stranger, World


class WorldTestCase(SynchronousTestCase):
    def world(self) -> World:
        directory = Path(self.mktemp())
        directory.mkdir()
        return World(directory)

    def assertStoredOnce(self, world: World, texts) -> None:
        stored = Counter(world.collector.texts())
        twice = sorted(text for text, n in stored.items() if n > 1)
        self.assertEqual(twice, [], "stored twice")
        missing = sorted(text for text in texts if stored[text] != 1)
        self.assertEqual(missing, [], "not stored")


class NegotiationTests(WorldTestCase):
    def test_a_late_welcome_turns_plain_text_into_the_stream(self) -> None:
        """
        A collector whose welcome comes after --hello-timeout (two lost segments):
        the reporter has gone to plain text meanwhile, which acknowledges
        nothing; the late welcome turns it to the stream, which delivers the
        backlog whole. (The fallback used to let the whole outbox go.)
        """
        world = self.world()
        pi = world.pi("pi-a")
        pi.take(50)  # taken while the collector was away
        link = pi.connect()
        link.pump.pump()  # the hello reaches the collector, which answers...
        world.clock.advance(HELLO_TIMEOUT + 0.5)  # ...too late: plain text
        self.assertEqual(link.client.mode, "1")
        self.assertEqual(pi.outbox.acked, 0)
        link.flush()
        self.assertEqual(link.client.mode, "2")
        self.assertTrue(pi.settle())
        self.assertStoredOnce(world, pi.taken)

    def test_a_refusal_is_not_plain_text(self) -> None:
        """A collector that refuses the stream (refused) makes the reporter back off, not speak plain text."""
        world = self.world()
        owner = world.pi("pi-a")
        owner.take(2)
        self.assertTrue(owner.settle())
        impostor = Pi(world, "pi-a", world.directory / "impostor.sqlite")  # the same device name...
        world.pis.append(impostor)
        impostor.outbox.journal.stream = owner.stream()  # ...and stream, with its own secret
        impostor.take(2)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        link = impostor.connect()
        link.flush()
        self.assertTrue(link.closed)
        self.assertNotEqual(link.client.mode, "1")  # no plain text to a collector that refused
        self.assertTrue(any("refused our stream" in formatEvent(e) for e in events))
        self.assertEqual(Counter(world.collector.texts()), Counter(owner.taken))


class RestoreAndCloneTests(WorldTestCase):
    def test_a_pi_restored_from_an_older_image(self) -> None:
        """
        A Pi restored from an image older than what the collector stored takes
        new readings under numbers the collector already holds. They are told
        apart by the chain's digests: the Pi's outbox goes on as a new stream,
        carrying what it took since the restore; nothing is lost or doubled.
        (60 readings after such a restore: 39 used to be acknowledged as
        duplicates without being stored.)
        """
        world = self.world()
        pi = world.pi("pi-a")
        pi.take(10)
        self.assertTrue(pi.settle())
        image = world.snapshot_pi(pi)
        pi.take(40)
        self.assertTrue(pi.settle())
        before = list(pi.taken)
        world.restore_pi(pi, image)
        pi.take(60)
        self.assertTrue(pi.settle())
        self.assertStoredOnce(world, before + pi.taken[10:])
        self.assertNotEqual(pi.stream(), world.collector.factory.registry.get("pi-a", pi.stream()) and None)

    def test_a_restore_that_kept_unsent_readings(self) -> None:
        """
        The image held readings the collector got only later, from the
        original: the restored Pi agrees on those (the probe search finds the
        last one both hold) and carries only what came after.
        """
        world = self.world()
        pi = world.pi("pi-a")
        pi.take(10)
        self.assertTrue(pi.settle())
        pi.take(5)  # 11..15, not sent yet when the image is taken
        image = world.snapshot_pi(pi)
        self.assertTrue(pi.settle())
        pi.take(10)
        self.assertTrue(pi.settle())
        before = list(pi.taken)
        world.restore_pi(pi, image)
        pi.take(7)
        self.assertTrue(pi.settle())
        self.assertStoredOnce(world, before + pi.taken[15:])

    def test_two_clones_both_stored_whole(self) -> None:
        """
        Two Pis cloned from one image report alternately: each goes its own
        way, and both end up stored whole, the shared history once. (Two
        clones reporting for 20 s used to store 127 of ~232 readings.)
        """
        world = self.world()
        a = world.pi("pi-a")
        a.take(5)
        image = world.snapshot_pi(a)
        b = world.clone(a, image, "pi-a-clone")
        for _ in range(4):
            a.take(3)
            self.assertTrue(a.settle())
            b.take(3)
            self.assertTrue(b.settle())
        self.assertStoredOnce(world, a.taken + b.taken)
        self.assertNotEqual(a.stream(), b.stream())


class StrangerTests(WorldTestCase):
    def test_a_stranger_can_neither_take_nor_end_a_stream(self) -> None:
        """
        Someone who names a reporter's stream (its id is on the web page and in
        the logs) in a hello, then sends a gap to the end of time, is refused
        before a byte of it is taken; the reporter's readings go on being
        stored. (One such stranger used to stop the stream for good.)
        """
        world = self.world()
        pi = world.pi("pi-a")
        pi.take(5)
        self.assertTrue(pi.settle())
        stranger = Stranger("pi-a", pi.stream())
        server = world.collector.factory.buildProtocol(IPv4Address("TCP", "192.168.0.66", 40000))
        pump = iosim.connect(server, iosim.FakeTransport(server, True), stranger,
                             iosim.FakeTransport(stranger, False), clock=world.clock)  # fmt: skip
        for _ in range(10):
            pump.pump()
        [refused] = stranger.received
        self.assertIsInstance(v2.parse(refused), v2.Refused)
        self.assertIn("belongs to another sender", v2.parse(refused).reason)
        pi.take(5)
        self.assertTrue(pi.settle())
        self.assertStoredOnce(world, pi.taken)
        self.assertEqual(world.collector.gaps(), [])


class CollectorRestoreTests(WorldTestCase):
    def test_a_collector_restored_from_a_backup_is_refilled(self) -> None:
        """With --outbox-keep, a collector restored from an older backup gets back what it lost."""
        world = self.world()
        pi = world.pi("pi-a", keep=86400.0)
        pi.take(10)
        self.assertTrue(pi.settle())
        backup = world.snapshot_collector()
        pi.take(10)
        self.assertTrue(pi.settle())
        for _ in range(20):  # (a trim comes: only what is older than --outbox-keep goes)
            world.clock.advance(1)
        world.restore_collector(backup)
        pi.take(3)
        self.assertTrue(pi.settle())
        self.assertStoredOnce(world, pi.taken)

    def test_without_keep_the_gap_names_the_collector(self) -> None:
        """Without --outbox-keep, what the Pi let go is a gap whose reason says the collector lost it."""
        world = self.world()
        pi = world.pi("pi-a")
        pi.take(10)
        self.assertTrue(pi.settle())
        backup = world.snapshot_collector()
        pi.take(10)
        self.assertTrue(pi.settle())
        for _ in range(20):  # the trim lets 11..19 go (the newest entry always stays)
            world.clock.advance(1)
        world.restore_collector(backup)
        pi.take(3)
        self.assertTrue(pi.settle())
        [(device, stream, first, last, reason)] = world.collector.gaps()
        self.assertEqual((first, last, reason), (11, 19, LOST_BY_COLLECTOR))
        self.assertStoredOnce(world, pi.taken[:10] + pi.taken[19:])


_steps = st.lists(st.one_of(
    st.tuples(st.just("take"), st.integers(0, 2), st.integers(1, 6)),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("cut"), st.integers(0, 2)),
    st.tuples(st.just("late welcome"), st.integers(0, 2)),
    st.tuples(st.just("restart pi"), st.integers(0, 2)),
    st.tuples(st.just("image pi"), st.integers(0, 2)),
    st.tuples(st.just("restore pi"), st.integers(0, 2)),
    st.tuples(st.just("clone"), st.integers(0, 2)),
    st.tuples(st.just("restart collector"),),
    st.tuples(st.just("backup collector"),),
    st.tuples(st.just("restore collector"),),
    st.tuples(st.just("stranger"), st.integers(0, 2)),
), max_size=30)  # fmt: skip


class LinkProperty(WorldTestCase):
    """Any mix of readings, partial deliveries, cuts, late answers, restarts, restores, clones and strangers."""

    @given(_steps)
    @settings(max_examples=int(os.environ.get("RPISENSOR_LINK_EXAMPLES", "60")), deadline=None)
    def test_every_reading_once(self, steps) -> None:
        world = self.world()
        pis = [world.pi("pi-a", keep=10**9)]
        images: dict[int, object] = {}
        backup = None
        clones = 0
        for step in steps:
            kind = step[0]
            pi = pis[step[1] % len(pis)] if len(step) > 1 else None
            if kind == "take":
                pi.take(step[2])
            elif kind == "deliver":
                link = pi.link if pi.link is not None and not pi.link.closed else pi.connect()
                for _ in range(step[2]):
                    link.pump.pump()
            elif kind == "cut":
                pi.disconnect()
            elif kind == "late welcome":
                link = pi.connect()
                link.pump.pump()
                world.clock.advance(HELLO_TIMEOUT + 0.5)
                link.pump.pump()
            elif kind == "restart pi":
                pi.close()
                pi.open()
            elif kind == "image pi":
                images[id(pi)] = world.snapshot_pi(pi)
            elif kind == "restore pi" and id(pi) in images:
                world.restore_pi(pi, images[id(pi)])
            elif kind == "clone" and id(pi) in images and len(pis) < 3:
                clones += 1
                pis.append(world.clone(pi, images[id(pi)], f"clone-{clones}"))
            elif kind == "restart collector":
                world.collector.close()
                world.collector.open()
            elif kind == "backup collector":
                backup = world.snapshot_collector()
            elif kind == "restore collector" and backup is not None:
                world.restore_collector(backup)
            elif kind == "stranger":
                state = world.collector.factory.registry.get(pi.name, pi.stream())
                if state is None or state.owner is None:
                    # A stream's id is made with the Pi's outbox and first shown once the Pi
                    # claimed it at a collector: a stranger cannot name it before (trust on first use).
                    continue
                stranger = Stranger(pi.name, pi.stream())
                server = world.collector.factory.buildProtocol(IPv4Address("TCP", "192.168.0.66", 40000))
                pump = iosim.connect(server, iosim.FakeTransport(server, True), stranger,
                                     iosim.FakeTransport(stranger, False), clock=world.clock)  # fmt: skip
                for _ in range(5):
                    pump.pump()
        # Then the faults stop: each Pi delivers what it holds.
        for _ in range(3):
            for pi in pis:
                self.assertTrue(pi.settle(), f"{pi.name} never caught up")
        self.assertStoredOnce(world, [text for pi in pis for text in pi.taken])
        self.assertEqual([g for g in world.collector.gaps() if g[4] != LOST_BY_COLLECTOR], [])
