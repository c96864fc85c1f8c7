"""The holder's loop on the fake chain and backend: it takes deposits and epoch records as the
backend streams them, releases on AttestationVerified in the same step, catches up after a
restart, deletes on LeaseClosed, backs off from a failing backend, and one bad lease never
stops the others."""

from __future__ import annotations

import threading

import pytest

from cvm.attestation.sim import SimulatedSecureProcessor
from keyservice.holder import Holder
from keyservice.service import Service
from keyservice.store import Store
from tests.unit.keyservice.world import OTHER_MEASUREMENT, World


@pytest.fixture(scope="module")
def chip() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(world: World, i: int, clock: Clock) -> Service:
    found = Service(world.holders[i], pull_s=1.0, clock=clock)
    found.start()
    return found


def test_deposits_then_verified_release_in_one_step_and_a_close_deletes(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    services = [service(world, i, clock) for i in range(3)]
    lease = world.lease(7)
    for i, backend in enumerate(world.backends):
        backend.deposits.append(world.deposit(lease, i))
    for s in services:
        s.step()
    assert all(store.share(7) is not None for store in world.stores)
    world.attest(lease)
    for s in services:
        s.step()  # the new block is read at once: no pull interval to wait for
    assert [len(b.posted) for b in world.backends] == [1, 1, 1]
    for s in services:
        s.step()
    assert [len(b.posted) for b in world.backends] == [1, 1, 1]  # once per report
    world.chain.emit("LeaseClosed", 7)
    for s in services:
        s.step()
    assert all(store.share(7) is None for store in world.stores)
    assert services[0].stats.releases == 1 and services[0].stats.deposits == 1


def test_a_deposit_that_arrives_after_verified_is_released_at_once(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    s = service(world, 0, clock)
    lease = world.lease(7)
    world.attest(lease)
    s.step()
    world.backends[0].deposits.append(world.deposit(lease, 0))
    clock.now += 1.0
    s.step()
    assert len(world.backends[0].posted) == 1


def test_a_restarted_holder_catches_up_with_a_verified_it_missed(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    lease = world.lease(7)
    world.deposit_all(lease)
    world.attest(lease)  # while the holder was down
    store = Store(tmp_path / "holder0")  # the same store, reopened
    restarted = Holder(world.keys[0], world.chain, world.backends[0], store,
                       roots=[chip.ark])  # fmt: skip
    Service(restarted, clock=clock).start()
    assert len(world.backends[0].posted) == 1
    world.chain.emit("LeaseClosed", 7)
    world.chain.emit("LeaseClosed", 99)  # not its lease: nothing recorded
    world.lease(8)
    s = Service(restarted, clock=clock)
    s.start()
    s.step()
    assert store.share(7) is None and not store.is_closed(99)


def test_epoch_records_stream_in_and_the_release_carries_the_highest(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    s = service(world, 0, clock)
    lease = world.lease(7)
    world.backends[0].deposits.append(world.deposit(lease, 0))
    s.step()
    world.backends[0].epoch_records += [world.epoch(lease, 4), world.epoch(lease, 2)]
    clock.now += 1.0
    s.step()
    assert world.stores[0].epoch(7).epoch == 4 and s.stats.refused == 1
    world.attest(lease)
    s.step()
    ((_, body),) = world.backends[0].posted
    assert world.open_release(lease, 0, body)["epoch"] == 4


def test_a_failing_backend_is_backed_off_and_the_loop_goes_on(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    s = service(world, 0, clock)
    world.backends[0].failing = True
    for _ in range(20):
        clock.now += 1.0
        s.step()
    calls = world.backends[0].calls
    assert 3 <= calls < 20  # exponential: not one call per step
    world.backends[0].failing = False
    lease = world.lease(7)
    world.backends[0].deposits.append(world.deposit(lease, 0))
    clock.now += 60.0
    s.step()
    assert world.stores[0].share(7) is not None


def test_a_release_that_fails_on_the_backend_is_retried(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    s = service(world, 0, clock)
    lease = world.lease(7)
    world.holders[0].accept_deposit(world.deposit(lease, 0))
    world.backends[0].failing = True
    world.attest(lease)
    s.step()
    assert world.backends[0].posted == []
    world.backends[0].failing = False
    clock.now += 5.0
    s.step()
    assert len(world.backends[0].posted) == 1


def test_a_bad_lease_does_not_stop_the_others(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    s = service(world, 0, clock)
    bad, good = world.lease(7), world.lease(8)
    for lease in (bad, good):
        world.holders[0].accept_deposit(world.deposit(lease, 0))
    world.attest(bad, measurement=OTHER_MEASUREMENT)  # refused
    world.backends[0].deposits.append({"cursor": 1, "lease_id": 3, "manifest": "junk"})
    world.backends[0].epoch_records.append({"cursor": 1, "lease_id": 8, "epoch": -1})
    world.attest(good)
    s.step()
    assert [lease for lease, _ in world.backends[0].posted] == [8]
    assert s.stats.refused >= 3


def test_a_dead_chain_is_backed_off_and_run_stops_on_request(tmp_path, chip):
    world, clock = World(tmp_path, chip=chip), Clock()
    s = service(world, 0, clock)
    world.chain.down = True
    s.step()
    assert s.stats.errors == 1
    s.step()  # still backing off: no second failure counted yet
    assert s.stats.errors == 1
    world.chain.down = False
    stop = threading.Event()
    stop.set()
    s.run(stop)  # returns at once


def test_no_share_reaches_the_log(tmp_path, chip, caplog):
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    world, clock = World(tmp_path, chip=chip), Clock()
    s = service(world, 0, clock)
    lease = world.lease(7)
    world.backends[0].deposits.append(world.deposit(lease, 0))
    world.backends[0].deposits.append(world.deposit(lease, 0, index=2))  # refused, logged
    s.step()
    world.attest(lease)
    s.step()
    assert len(world.backends[0].posted) == 1 and "refused" in caplog.text
    share = lease.shares[0]
    for shown in (share.hex(), base64.b64encode(share).decode(), repr(share)):
        assert shown not in caplog.text


def test_a_chain_down_at_start_is_waited_for(tmp_path, chip):
    world = World(tmp_path, chip=chip)
    world.chain.down = True
    s = Service(world.holders[0])
    stop = threading.Event()
    thread = threading.Thread(target=s.run, args=(stop,))
    thread.start()
    try:
        from tests.fixtures.processes import wait_for

        wait_for(lambda: s.stats.errors >= 1, timeout=10, what="a failed start")
        world.chain.down = False
        wait_for(lambda: world.stores[0].cursor("block") is not None, timeout=10,
                 what="the start after the chain came back")  # fmt: skip
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
