"""The whole flow under load: lease creation to `AttestationVerified` on the embedded stack.

`python -m bench.e2e --json [--leases 100] [--nodes 20] [--renters 10]` starts the stack
of `cvm up` (simulated launchers) in a temporary directory, has several renters create
`--leases` leases as fast as the chain takes them, and watches the chain for each lease's
`AttestationVerified`. It prints one JSON object: p50/p99/max seconds from sending the
create transaction (not the renter's checks before it) to seeing the event, and the
leases per minute sustained (all leases over the time from the first create to the last
verification). Beside them, measured in
the same run on the same chain, the chain's own ceiling for the transactions one lease
needs, sent by the benchmark itself with no backend,
agent or verifier in between: their round trips back to back (the floor of one lease's
latency) and the leases per minute they allow sequentially and at the same concurrency as
the renters. `throughput_fraction` is the stack's leases per minute over the concurrent
ceiling (target >= 0.6), `p50_over_floor` the single lease's p50 over the bare round
trips (target <= 2). The transactions are those the agents' accept mode needs
(`--accept-mode`, `CVM_NODE_ACCEPT_MODE`): create, acceptAndSubmit, confirm (combined, the
default: the node accepts and submits its first report in one transaction) or create,
accept, submit, confirm (separate). `phases_p50_s` says where a lease's time goes: create ->
accepted (indexing, matching, dispatch, the agent's accept; combined: also the launch, report
and upload), accepted -> submitted (launch, report, upload, submit; combined: zero, one
transaction), submitted -> verified (indexing, verification, confirm).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from eth_account import Account

from backend.indexer.heads import NewHeads, websocket_url
from bench.harness import cpu_seconds_by_group, own_cpu_seconds, percentile
from cvm.api_client import ApiClient
from cvm.chain import (
    ChainClient,
    DeployConfig,
    LeaseSpec,
    NodeSpec,
    TeeType,
    connect,
    sign_node_consent,
)
from cvm.renter import Renter, RentRequest
from devstack import DEMO_MEASUREMENT, EmbeddedStack, StackConfig
from devstack.faucet import fund, local_deployer

# Rounds of the bare transactions, and single leases, whose medians are compared.
SINGLE_ROUNDS = 9
_MAX_PRICE = 3 * 10**12  # every node of the default fleet fits one vCPU at this price
# A guest signer address for the benchmark's submissions (never the node key).
_GUEST_SIGNER = "0x5151515151515151515151515151515151515151"
# The floor's lease needs more vCPUs than any agent has, so only the benchmark accepts it;
# its node holds 500 of them at once (the chain counts each node's used capacity).
_FLOOR_NODE = NodeSpec(TeeType.SEV_SNP, 64_000, 1 << 31, 10_000_000, 0, 10**9)
_FLOOR_SPEC = LeaseSpec(TeeType.SEV_SNP, 128, 4096, 10, 0, 3600, b"\x0f" * 32)
# The node agents' accept mode (their setting, read by the stack's agents).
ACCEPT_MODE_ENV = "CVM_NODE_ACCEPT_MODE"


def _lease_parties(admin: ChainClient) -> tuple[ChainClient, ChainClient, ChainClient]:
    """A funded renter, a registered and staked node of the floor's spec, and a verifier."""
    renter = admin.with_account(Account.create())
    node_account = Account.create()
    node = admin.with_account(node_account)
    operator = admin.with_account(Account.create())
    verifier = admin.with_account(Account.create())
    for account in (renter, node, operator, verifier):
        assert account.address is not None
        fund(admin, account.address, 10**24, 10**19)
    assert operator.address is not None
    consent = sign_node_consent(node_account, operator.address, admin.deployment)
    operator.nodes.register(str(node.address), _FLOOR_NODE, node_key_signature=consent)
    operator.token.approve(admin.deployment.node_registry, 10**21)
    operator.nodes.stake(str(node.address), 10**21)
    admin.attestations.add_verifier(str(verifier.address))
    if admin.court is not None:  # only staked verifiers vote (issue 21): stake as deploy does
        verifier_stake = DeployConfig().verifier_stake
        admin.token.mint(str(admin.address), verifier_stake)
        admin.token.approve(admin.deployment.attestation_court or "", verifier_stake)
        admin.court.stake_for(str(verifier.address), verifier_stake)
    renter.token.approve(admin.deployment.lease_market, 2**255)
    return renter, node, verifier


def inclusions(accept_mode: str) -> tuple[str, ...]:
    """The transactions one lease needs, each after the one before is mined: the agents'
    combined accept sends the accept and the first attestation as one (`acceptAndSubmit`)."""
    if accept_mode == "combined":
        return ("create", "acceptAndSubmit", "confirm")
    return ("create", "accept", "submit", "confirm")


def _accept_and_attest(node: ChainClient, lease_id: int, report_hash: bytes, mode: str) -> None:
    """The node's part of a lease in `mode`: one transaction (combined) or two (separate)."""
    nonce = node.attestations.attestation_nonce(lease_id)
    args = (lease_id, nonce, report_hash, DEMO_MEASUREMENT, 0, bytes(32))
    if mode == "combined":
        node.attestations.accept_and_submit(*args, signer=_GUEST_SIGNER)
        return
    node.leases.accept_lease(lease_id)
    node.attestations.submit(*args, signer=_GUEST_SIGNER)


def measure_floor(
    admin: ChainClient, rounds: int = 5, accept_mode: str = "combined"
) -> dict[str, float]:
    """Median round trip of each raw transaction of one lease in `accept_mode`, and their sum,
    sent by the benchmark itself with its own renter, node and verifier."""
    renter, node, verifier = _lease_parties(admin)
    samples: dict[str, list[float]] = {name: [] for name in inclusions(accept_mode)}
    price = _FLOOR_NODE.price_per_vcpu_second * _FLOOR_SPEC.vcpu
    for index in range(rounds):
        report_hash = (index + 1).to_bytes(32, "big")
        clock = time.perf_counter()
        lease_id = renter.leases.create_lease(
            _FLOOR_SPEC, price, price * 3600, DEMO_MEASUREMENT
        ).lease_id
        samples["create"].append(time.perf_counter() - clock)
        nonce = node.attestations.attestation_nonce(lease_id)  # read while open: not timed
        args = (lease_id, nonce, report_hash, DEMO_MEASUREMENT, 0, bytes(32))
        if accept_mode == "combined":
            clock = time.perf_counter()
            node.attestations.accept_and_submit(*args, signer=_GUEST_SIGNER)
            samples["acceptAndSubmit"].append(time.perf_counter() - clock)
        else:
            clock = time.perf_counter()
            node.leases.accept_lease(lease_id)
            samples["accept"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            node.attestations.submit(*args, signer=_GUEST_SIGNER)
            samples["submit"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        verifier.attestations.confirm(lease_id, report_hash, True)
        samples["confirm"].append(time.perf_counter() - clock)
        # Closed at once: a lease left running on a node that sends no heartbeats would have
        # the backend's liveness job challenge it while the stack is measured.
        renter.leases.close_lease(lease_id)
    floor = {f"{name}_s": statistics.median(values) for name, values in samples.items()}
    floor["sum_s"] = sum(floor.values())
    return floor


def measure_ceiling(
    admin: ChainClient, concurrency: int, rounds: int, accept_mode: str = "combined"
) -> dict[str, float]:
    """Leases per minute the chain takes when `concurrency` workers each send the transactions
    of a lease (`inclusions(accept_mode)`) back to back, each worker with its own accounts."""
    workers = [_lease_parties(admin) for _ in range(concurrency)]
    price = _FLOOR_NODE.price_per_vcpu_second * _FLOOR_SPEC.vcpu
    created: list[list[int]] = [[] for _ in workers]

    def lease_after_lease(index: int) -> None:
        renter, node, verifier = workers[index]
        for round_ in range(rounds):
            report_hash = (index * 1000 + round_ + 1).to_bytes(32, "big")
            lease_id = renter.leases.create_lease(
                _FLOOR_SPEC, price, price * 3600, DEMO_MEASUREMENT
            ).lease_id
            created[index].append(lease_id)
            _accept_and_attest(node, lease_id, report_hash, accept_mode)
            verifier.attestations.confirm(lease_id, report_hash, True)

    threads = [threading.Thread(target=lease_after_lease, args=(i,)) for i in range(concurrency)]
    clock = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - clock
    for (renter, _node, _verifier), lease_ids in zip(workers, created, strict=True):
        for lease_id in lease_ids:  # closed after the clock stopped (see measure_floor)
            renter.leases.close_lease(lease_id)
    return {"concurrency": concurrency, "leases_per_minute": concurrency * rounds / elapsed * 60}


# The events that mark a lease's phases, by the lease id they carry.
_PHASE_EVENTS = ("LeaseAccepted", "AttestationSubmitted", "AttestationVerified")


class _VerifiedWatcher(threading.Thread):
    """Records when each lease's LeaseAccepted, AttestationSubmitted and AttestationVerified
    first appear on chain (`seen` is the last of them). Woken by the chain's new blocks
    (`eth_subscribe newHeads`, as the backend), polling every 20 ms only without them."""

    def __init__(self, chain: ChainClient, from_block: int) -> None:
        super().__init__(daemon=True)
        self.chain = chain
        self.next_block = from_block
        self.phases: dict[str, dict[int, float]] = {name: {} for name in _PHASE_EVENTS}
        self.seen = self.phases["AttestationVerified"]
        self.stop = threading.Event()
        self._block = threading.Event()
        rpc_url = str(getattr(chain.w3.provider, "endpoint_uri", ""))
        self._heads = NewHeads(websocket_url(rpc_url), lambda _number: self._block.set())

    def run(self) -> None:
        self._heads.start()
        try:
            self._follow()
        finally:
            self._heads.stop()

    def _follow(self) -> None:
        while not self.stop.is_set():
            self._block.wait(0.5 if self._heads.subscribed.is_set() else 0.02)
            self._block.clear()
            head = int(self.chain.w3.eth.block_number)
            if head < self.next_block:
                continue
            now = time.perf_counter()
            for event in self.chain.fetch_events(self.next_block, head):
                if event.name in self.phases:
                    self.phases[event.name].setdefault(int(event.args["leaseId"]), now)
            self.next_block = head + 1


def _phase_p50s(sent: dict[int, float], watcher: _VerifiedWatcher) -> dict[str, float]:
    accepted = watcher.phases["LeaseAccepted"]
    submitted = watcher.phases["AttestationSubmitted"]
    verified = watcher.phases["AttestationVerified"]
    done = [i for i in sent if i in accepted and i in submitted and i in verified]
    if not done:
        return {}
    return {
        "create_to_accepted": round(statistics.median(accepted[i] - sent[i] for i in done), 3),
        "accepted_to_submitted": round(
            statistics.median(submitted[i] - accepted[i] for i in done), 3
        ),
        "submitted_to_verified": round(
            statistics.median(verified[i] - submitted[i] for i in done), 3
        ),
    }


def time_creates(renter: Renter) -> threading.local:
    """Record when `renter` sends each create transaction (`.at` of the returned object, per
    thread; `.wall` on the wall clock): a lease's creation is that transaction, not the
    renter's checks before it (node list, balance, private spec, permit signature)."""
    stamp = threading.local()
    leases = renter.chain.leases
    original = leases.create_lease_with_permit

    def timed(*args: Any, **kwargs: Any) -> Any:
        stamp.at = time.perf_counter()
        stamp.wall = time.time()
        return original(*args, **kwargs)

    leases.create_lease_with_permit = timed  # type: ignore[method-assign]
    return stamp


def single_leases(
    renter: Renter, request: RentRequest, watcher: _VerifiedWatcher, count: int
) -> dict[int, float]:
    """Leases created one at a time on an idle stack, each waited for until Verified:
    when each was sent (`perf_counter`), by lease id."""
    sent: dict[int, float] = {}
    stamp = time_creates(renter)
    for _ in range(count):
        lease_id = renter.rent(request)
        at = stamp.at
        deadline = time.perf_counter() + 120
        while lease_id not in watcher.seen:
            if time.perf_counter() > deadline:
                raise SystemExit(f"lease {lease_id} was not verified within 120 s")
            time.sleep(0.01)
        sent[lease_id] = at
    return sent


def run(
    leases: int,
    nodes: int,
    renters: int,
    timeout_s: float,
    keep: Path | None = None,
    accept_mode: str = "combined",
) -> dict[str, Any]:
    saved = os.environ.get(ACCEPT_MODE_ENV)
    os.environ[ACCEPT_MODE_ENV] = accept_mode  # the stack's agents inherit it
    try:
        return _run(leases, nodes, renters, timeout_s, keep, accept_mode)
    finally:
        if saved is None:
            os.environ.pop(ACCEPT_MODE_ENV, None)
        else:
            os.environ[ACCEPT_MODE_ENV] = saved


def _run(
    leases: int, nodes: int, renters: int, timeout_s: float, keep: Path | None, accept_mode: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cvm-bench-e2e-") as temporary:
        directory = keep or Path(temporary)
        started = time.perf_counter()
        # Heartbeats and reconciler passes spaced out: twenty agents share two cores here.
        config = StackConfig(Path(directory), nodes=nodes, heartbeat_s=10.0, reconcile_s=15.0)
        with EmbeddedStack(config) as stack:
            startup_s = time.perf_counter() - started
            assert stack.deployment is not None and stack.state is not None
            chain = connect(stack.deployment, rpc_url=stack.state.rpc_url)
            admin = chain.with_account(local_deployer(stack.deployment))
            # On the idle stack, before anything else runs on the chain.
            floor = measure_floor(admin, rounds=SINGLE_ROUNDS, accept_mode=accept_mode)
            ceiling = measure_ceiling(admin, renters, rounds=3, accept_mode=accept_mode)

            wallets = []
            for _ in range(renters):
                account = Account.create()
                fund(admin, account.address, 10**24, 10**19)
                wallets.append(Renter(chain.with_account(account), ApiClient(stack.state.api_url)))
            request = RentRequest(
                vcpu=1,
                memory_mib=1024,
                disk_gib=10,
                image="cvm-demo-guest",
                measurement=DEMO_MEASUREMENT,
                max_rate_per_second=_MAX_PRICE,
                deposit=_MAX_PRICE * 3600,
            )
            watcher = _VerifiedWatcher(chain, int(chain.w3.eth.block_number) + 1)
            watcher.start()
            # One lease at a time first: its latency against the bare round trips.
            singles = single_leases(wallets[0], request, watcher, count=SINGLE_ROUNDS)
            single_p50 = statistics.median(watcher.seen[i] - at for i, at in singles.items())
            sent: dict[int, float] = {}
            lock = threading.Lock()
            errors: list[str] = []

            def renter_loop(renter: Renter, count: int) -> None:
                stamp = time_creates(renter)
                for _ in range(count):
                    try:
                        lease_id = renter.rent(request)
                    except Exception as exc:
                        errors.append(str(exc))
                        continue
                    with lock:
                        sent[lease_id] = stamp.at

            shares = [
                leases // renters + (1 if i < leases % renters else 0) for i in range(renters)
            ]
            threads = [
                threading.Thread(target=renter_loop, args=(renter, share))
                for renter, share in zip(wallets, shares, strict=True)
            ]
            cpu_before = cpu_seconds_by_group(stack.state.groups)
            own_before = own_cpu_seconds()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            deadline = time.perf_counter() + timeout_s
            while time.perf_counter() < deadline and not set(sent) <= set(watcher.seen):
                time.sleep(0.2)
            cpu_after = cpu_seconds_by_group(stack.state.groups)
            own_s = own_cpu_seconds() - own_before
            watcher.stop.set()
            watcher.join(5)
            latencies = [watcher.seen[i] - t for i, t in sent.items() if i in watcher.seen]
            if not latencies:
                raise SystemExit(f"no lease was verified (errors: {errors[:3]})")
            first = min(sent.values())
            last = max(watcher.seen[i] for i in sent if i in watcher.seen)
            p50 = statistics.median(latencies)
            per_minute = len(latencies) / (last - first) * 60
            sequential = 60 / floor["sum_s"]
            cpu = _cpu_per_lease(cpu_before, cpu_after, own_s, len(latencies))
            # What two cores allow at that CPU per lease: the burst cannot beat it whatever
            # the chain's ceiling.
            machine = 60 * (os.cpu_count() or 1) / cpu["total"]
            return {
                "benchmark": "e2e",
                "nodes": nodes,
                "renters": renters,
                "leases_requested": leases,
                "leases_created": len(sent),
                "leases_verified": len(latencies),
                "not_verified": sorted(set(sent) - set(watcher.seen)),
                "errors": errors[:5],
                "create_to_verified_s": {
                    "p50": round(p50, 3),
                    "p99": round(percentile(latencies, 0.99), 3),
                    "max": round(max(latencies), 3),
                },
                "leases_per_minute": round(per_minute, 1),
                "phases_p50_s": _phase_p50s(sent, watcher),
                "accept_mode": accept_mode,
                "sequential_inclusions": list(inclusions(accept_mode)),
                "floor_raw_tx_round_trips_s": {k: round(v, 4) for k, v in floor.items()},
                "chain_ceiling_leases_per_minute": {
                    "sequential": round(sequential, 1),
                    f"concurrent_{renters}": round(ceiling["leases_per_minute"], 1),
                },
                "throughput_fraction": round(per_minute / ceiling["leases_per_minute"], 3),
                "cpu_s_per_lease": cpu,
                "machine_ceiling_leases_per_minute": round(machine, 1),
                "throughput_fraction_of_machine": round(per_minute / machine, 3),
                "single_lease_p50_s": round(single_p50, 3),
                "single_lease_phases_p50_s": _phase_p50s(singles, watcher),
                "p50_over_floor": round(single_p50 / floor["sum_s"], 2),
                "loaded_p50_over_floor": round(p50 / floor["sum_s"], 1),
                "stack_startup_s": round(startup_s, 1),
            }


_ROLES = ("anvil", "redis", "backend")


def _cpu_per_lease(
    before: dict[str, float], after: dict[str, float], own_s: float, leases: int
) -> dict[str, float]:
    """CPU seconds per verified lease of the burst, by role: the chain, the broker, the
    backend (indexer, matcher, verifier, API), the node agents together, and this process
    (the renters' clients and the watcher)."""
    used: dict[str, float] = {"renters_and_watcher": own_s}
    for name, seconds in after.items():
        role = name if name in _ROLES else "node_agents"
        used[role] = used.get(role, 0.0) + seconds - before.get(name, 0.0)
    per_lease = {role: round(seconds / leases, 4) for role, seconds in sorted(used.items())}
    per_lease["total"] = round(sum(used.values()) / leases, 4)
    return per_lease


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    parser.add_argument("--leases", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--renters", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--data-dir", type=Path, help="keep the stack's logs here (debugging)")
    parser.add_argument(
        "--accept-mode",
        choices=("combined", "separate"),
        default="combined",
        help="how the stack's node agents accept (CVM_NODE_ACCEPT_MODE; combined by default)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (the only output)")
    args = parser.parse_args()
    result = run(
        args.leases, args.nodes, args.renters, args.timeout, args.data_dir, args.accept_mode
    )
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
