"""Renter and dApp journeys on one `cvm up` stack, driven through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cvm.chain import ContractRevert, sign_guest_result
from cvm.sdk import AttestationClient
from devstack import DEMO_MEASUREMENT
from tests.e2e.conftest import Stack, chain_of, new_wallet, node_name, password_file, stack_key
from tests.e2e.harness import descendants, group_alive, pid_alive
from tests.fixtures.processes import stop_process, wait_for

pytestmark = pytest.mark.e2e

NODE0_PRICE = 10**12  # per vCPU-second: the cheapest node of `cvm up`'s default fleet


def test_rent_attest_dapp_topup_close_refund(stack: Stack) -> None:
    alice = new_wallet(stack, "alice")
    chain = chain_of(stack)
    address = next(w["address"] for w in stack.cli.json("wallet", "list") if w["name"] == "alice")
    balance_before = chain.token.balance_of(address)

    lease = stack.cli.json("rent", "--vcpu", "2", "--duration", "10m", *alice)
    lease_id = lease["lease_id"]
    assert lease["status"] == "active"
    assert lease["attestation"]["status"] == "verified"
    assert lease["attestation"]["measurement"] == "0x" + DEMO_MEASUREMENT.hex()
    deposit = lease["deposit"]
    assert chain.token.balance_of(address) == balance_before - deposit

    status = stack.cli.json("attestation", "status", str(lease_id))
    assert status["status"] == "verified"
    assert status["node"] == lease["node"]
    assert status["verification"]["ok"] is True
    assert status["verification"]["reason_codes"] == []

    # The dApp side: the SDK, and the example consumer contract gating on isAttested.
    sdk = AttestationClient(chain.deployment.rpc_url or "", chain.deployment.attestation_registry)
    seen = sdk.status(lease_id)
    assert seen.verified and seen.measurement == DEMO_MEASUREMENT
    assert sdk.is_attested(lease_id, DEMO_MEASUREMENT)
    assert not sdk.is_attested(lease_id, bytes(48))
    # The example dApp takes only results signed by the guest's attested signer, never the
    # node key's (the guest signs on request of processes inside it, not of its host).
    signer = chain.attestations.attested_signer_of(lease_id)
    assert int(signer, 16) != 0 and signer.lower() != lease["node"].lower()
    node = stack_key(stack, node_name(stack, lease["node"]))
    assert node.account is not None
    request, result = bytes(range(32)), b"result"
    forged = sign_guest_result(
        node.account,
        lease_id,
        request,
        result,
        chain.deployment.chain_id,
        chain.deployment.attestation_registry,
    )
    with pytest.raises(ContractRevert) as by_node:
        node.service.post_result(lease_id, request, result, forged)
    assert by_node.value.name == "AttestedService_NotAttestedSigner"
    with pytest.raises(ContractRevert) as refused:
        node.service.post_result(lease_id + 1000, request, result, forged)
    assert refused.value.name == "AttestedService_NotAttested"

    topped = stack.cli.json("lease", "topup", str(lease_id), "0.001", *alice)
    assert topped["deposit"] == deposit + 10**15
    listed = stack.cli.json("leases", *alice[:2])  # reading needs no password
    assert lease_id in [entry["lease_id"] for entry in listed]

    closed = stack.cli.json("lease", "close", str(lease_id), *alice)
    assert closed["status"] == "closed" and closed["close_reason"] == "renter"
    assert closed["earned"] > 0, "attested seconds were paid for"
    assert closed["refund"] + closed["earned"] == deposit + 10**15
    assert chain.token.balance_of(address) == balance_before - closed["earned"]
    # The operator is paid exactly what the lease earned.
    operator = stack_key(stack, node_name(stack, lease["node"]).replace("node", "operator"))
    claimed = operator.leases.claim(lease_id)
    assert claimed.event("EarningsClaimed").args["amount"] == closed["earned"]


def test_no_node_fits(stack: Stack) -> None:
    bob = new_wallet(stack, "bob")
    before = chain_of(stack).leases.next_lease_id()
    refused = stack.cli.run(
        "rent", "--vcpu", "64", "--duration", "10m", "--max-price", "1", *bob, check=False
    )
    assert refused.code == 1
    assert "no matching node" in refused.stderr
    assert chain_of(stack).leases.next_lease_id() == before, "no lease was created"


def test_helpful_errors(stack: Stack) -> None:
    carol = new_wallet(stack, "carol", fund=False)
    broke = stack.cli.run("rent", "--duration", "10m", *carol, "--json", check=False)
    assert broke.code == 1
    assert "insufficient funds" in broke.json["error"]

    dave = new_wallet(stack, "dave")
    erin = new_wallet(stack, "erin")
    lease = stack.cli.json("rent", "--duration", "10m", "--no-wait", *dave)
    stranger = stack.cli.run("lease", "close", str(lease["lease_id"]), *erin, check=False)
    assert stranger.code == 1 and "is not yours" in stranger.stderr
    assert stack.cli.json("lease", "show", str(lease["lease_id"]), *dave[:2])["status"] != "closed"

    record = json.loads((stack.data_dir / "deployment.json").read_text())
    other = stack.data_dir / "other-network.json"
    other.write_text(json.dumps({**record, "chain_id": 1}))
    wrong = stack.cli.run("leases", "--deployment", str(other), *dave[:2], check=False)
    assert wrong.code == 1 and "wrong network" in wrong.stderr
    stack.cli.json("lease", "close", str(lease["lease_id"]), *dave)


def test_deposit_runs_out(stack: Stack) -> None:
    frank = new_wallet(stack, "frank")
    # One vCPU at node-0's price: only node-0 fits, and 6 attested seconds use it all.
    lease = stack.cli.json(
        "rent", "--vcpu", "1", "--memory", "1024", "--disk", "10",
        "--max-price", f"{NODE0_PRICE}base", "--deposit", f"{6 * NODE0_PRICE}base", *frank,
    )  # fmt: skip
    lease_id = lease["lease_id"]
    assert lease["attestation"]["status"] == "verified"
    guest = (
        stack.data_dir
        / "stack"
        / "node"
        / lease["node"].lower()
        / "guests"
        / f"lease-{lease_id}.json"
    )
    assert guest.exists(), "the simulated guest runs while the lease is paid for"

    def settled() -> dict | None:
        shown = stack.cli.json("lease", "show", str(lease_id), *frank[:2])
        return shown if shown["status"] == "closed" else None

    final = wait_for(settled, 60, interval=0.5, what="the agent to settle the exhausted lease")
    assert final["close_reason"] == "exhausted"
    assert final["earned"] == 6 * NODE0_PRICE
    wait_for(lambda: not guest.exists(), 30, interval=0.5, what="the agent to stop the guest")


def test_node_killed_mid_lease(stack: Stack) -> None:
    grace = new_wallet(stack, "grace")
    cheap = ["--vcpu", "1", "--memory", "1024", "--disk", "10", "--max-price", f"{NODE0_PRICE}base"]
    lease = stack.cli.json("rent", *cheap, "--duration", "10m", *grace)
    lease_id = lease["lease_id"]
    name = node_name(stack, lease["node"])
    assert name == "node-0"
    old_pid = next(n["pid"] for n in stack.cli.state()["nodes"] if n["name"] == name)

    os.killpg(old_pid, signal.SIGKILL)

    def restarted() -> int | None:
        pid = next(n["pid"] for n in stack.cli.state()["nodes"] if n["name"] == name)
        return pid if pid != old_pid else None

    wait_for(restarted, 30, interval=0.5, what="cvm up to restart the killed agent")
    # The lease survived on chain; the restarted agent reconciles and keeps serving.
    shown = stack.cli.json("lease", "show", str(lease_id), *grace[:2])
    assert shown["status"] == "active" and shown["attestation"]["status"] == "verified"
    second = stack.cli.json("rent", *cheap, "--duration", "10m", *grace)
    assert second["node"] == lease["node"]
    assert second["attestation"]["status"] == "verified"
    for opened in (lease, second):
        closed = stack.cli.json("lease", "close", str(opened["lease_id"]), *grace)
        assert closed["earned"] > 0
        assert closed["refund"] + closed["earned"] == opened["deposit"]


def test_readme_operator_journey(stack: Stack, tmp_path: Path) -> None:
    """The README's operator commands as written, on `cvm up`, the agent run from elsewhere."""
    cli = stack.cli
    node_pw = password_file(stack.data_dir, "node-key")
    op_pw = password_file(stack.data_dir, "op")
    node_json = stack.data_dir / "node.json"
    node = cli.json("node", "new-key", "--out", str(node_json), "--password-file", str(node_pw))
    address = node["address"]
    assert cli.json("wallet", "fund", address, "--tokens", "0")["ether"] > 0  # gas
    cli.json("wallet", "new", "op", "--password-file", str(op_pw),
             "--kdf", "pbkdf2", "--iterations", "1000")  # fmt: skip
    cli.json("wallet", "fund", "op", "--tokens", "1000")
    operator = ["--keystore", str(stack.data_dir / "wallets" / "op.json"),
                "--password-file", str(op_pw), "--node-key", address]  # fmt: skip
    cli.json("node", "register", *operator, "--node-keystore", str(node_json),
             "--node-password-file", str(node_pw), "--vcpu", "2", "--memory-mib", "2048",
             "--disk-gib", "20", "--price", "0.001")  # fmt: skip
    staked = cli.json("node", "stake", *operator, "1000")
    assert staked["stake"] == 1000 * 10**18
    status = cli.json("node", "status", "--node-key", address)
    assert status["registered"] and status["stake"] >= status["min_stake"]
    assert status["gas_wei"] > 0 and status["price_per_vcpu_second"] == 10**15
    assert cli.json("node", "claim", *operator)["claimed"] == 0

    elsewhere = tmp_path / "another-directory"
    elsewhere.mkdir()
    log = elsewhere / "agent.log"
    with log.open("w") as sink:
        agent = subprocess.Popen(
            [sys.executable, "-m", "cvm", "node", "run", "--keystore", str(node_json),
             "--password-file", str(node_pw)],
            cwd=elsewhere, env=cli.env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: "ready." in log.read_text() or agent.poll() is not None, 90, what="the agent"
        )
        assert agent.poll() is None, log.read_text()[-2000:]
        assert f"node agent {address}" in log.read_text()
    finally:
        stop_process(agent, timeout=60)  # SIGKILL if SIGTERM is not enough


def test_cvm_down_leaves_nothing_running(stack: Stack) -> None:
    """Last in this module: `cvm down` from another shell ends the shared stack."""
    state = stack.cli.state()
    assert {"anvil", "redis", "backend", "node-0", "node-1", "node-2"} <= set(state["groups"])
    below = descendants(stack.up.pid)
    assert len(below) >= 6

    assert stack.cli.json("down")["stopped"] is True
    assert stack.up.wait(60) == 0, stack.cli.up_log()
    assert [name for name, pgid in state["groups"].items() if group_alive(pgid)] == []
    assert [pid for pid in below if pid_alive(pid)] == []
    assert not (stack.data_dir / "stack.json").exists()
    assert not (stack.data_dir / "deployment.json").exists(), "the chain's record went with it"
    assert stack.cli.json("down")["stopped"] is False
    gone = stack.cli.run("leases", "--json", check=False)
    assert gone.code == 1 and "cvm up" in gone.json["error"]
