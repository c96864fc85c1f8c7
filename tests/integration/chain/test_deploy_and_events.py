"""Deployment wiring, the deployment record, and event decoding over block ranges."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.chain import AttestationStatus, ChainError, Deployment, connect
from tests.fixtures.chain import DEPOSIT, GUEST_SIGNER, LEASE_SPEC, MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


def test_deploy_wires_the_contracts_together(chain: ChainSystem) -> None:
    client = chain.client()
    deployment = chain.deployment
    assert deployment.chain_id == chain.anvil.w3.eth.chain_id == 31337
    assert client.nodes.lease_market() == deployment.lease_market
    assert client.nodes.token() == deployment.token
    assert client.attestations.lease_market() == deployment.lease_market
    assert client.attestations.quorum() == 1
    assert client.attestations.is_verifier(chain.accounts.verifier.address)
    assert not client.attestations.is_verifier(chain.accounts.stranger.address)
    assert client.nodes.min_stake() == 100 * 10**18
    assert client.leases.attestation_window() == 600
    assert client.leases.measurement_length() == 48
    assert client.service.expected_measurement() == MEASUREMENT
    for address in deployment.contracts().values():
        assert len(chain.anvil.w3.eth.get_code(address)) > 0


def test_deployment_record_round_trips(chain: ChainSystem, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deployment.json"
    chain.deployment.save(path)
    assert Deployment.load(path) == chain.deployment
    with pytest.raises(ChainError):
        Deployment.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"chain_id": 1}')
    with pytest.raises(ChainError):
        Deployment.load(tmp_path / "bad.json")


def test_events_from_the_start_block_tell_the_whole_story(chain: ChainSystem) -> None:
    first = chain.anvil.w3.eth.block_number + 1
    lease_id = chain.attested_lease()
    events = chain.client().fetch_events(first)
    names = [e.name for e in events if e.contract != "TestToken"]
    assert names == [
        "NodeRegistered",
        "Staked",
        "LeaseCreated",
        "LeaseAccepted",
        "AttestationSubmitted",
        "AttestationEvidence",
        "AttestationVote",
        "AttestationVerified",
    ]
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    created = next(e for e in events if e.name == "LeaseCreated")
    assert created.contract == "LeaseMarket" and created.address == chain.deployment.lease_market
    assert created.args["leaseId"] == lease_id
    assert created.args["renter"] == chain.accounts.renter.address
    assert created.args["deposit"] == DEPOSIT
    assert created.args["expectedMeasurement"] == MEASUREMENT
    submitted = next(e for e in events if e.name == "AttestationSubmitted")
    assert submitted.args["node"] == chain.accounts.node_key.address
    evidence = next(e for e in events if e.name == "AttestationEvidence")
    assert evidence.args == {
        "leaseId": lease_id,
        "nonce": 0,
        "reportedTcb": 7,
        "chipIdHash": b"\xcc" * 32,
        "signer": GUEST_SIGNER.address,
    }
    registered = next(e for e in events if e.name == "NodeRegistered")
    assert registered.args["endpoint"] == "https://node.test"
    # A narrower range holds just its own blocks' events.
    last = chain.client().fetch_events(events[-1].block_number, events[-1].block_number)
    assert {e.name for e in last} == {"AttestationVote", "AttestationVerified"}
    assert chain.client().fetch_events(events[-1].block_number + 1) == []


def test_deployment_events_start_at_the_start_block(chain: ChainSystem) -> None:
    events = chain.client().fetch_events(chain.deployment.start_block)
    assert {"LeaseMarketSet", "MinStakeSet", "QuorumSet"} <= {e.name for e in events}
    assert all(e.block_number >= chain.deployment.start_block for e in events)


def test_a_client_connects_by_url(chain: ChainSystem) -> None:
    client = connect(chain.deployment, rpc_url=chain.anvil.rpc_url)
    assert client.address is None
    assert client.leases.next_lease_id() == 1


def test_ownership_moves_in_two_steps(chain: ChainSystem) -> None:
    nodes = chain.admin.nodes
    new_owner = chain.accounts.stranger.address
    assert nodes.owner() == chain.accounts.deployer.address
    nodes.transfer_ownership(new_owner)
    assert nodes.owner() == chain.accounts.deployer.address
    assert nodes.pending_owner() == new_owner
    chain.stranger.nodes.accept_ownership()
    assert nodes.owner() == new_owner
    chain.stranger.nodes.set_min_stake(1)
    assert nodes.min_stake() == 1


def test_token_views_and_a_permit_sent_by_someone_else(chain: ChainSystem) -> None:
    token = chain.client().token
    assert (token.name(), token.symbol(), token.decimals()) == ("cvm Test Token", "CVMT", 18)
    assert len(token.domain_separator()) == 32
    owner, spender = chain.accounts.renter, chain.accounts.stranger
    permit = chain.renter.token.sign_permit(owner, spender.address, 123, chain.now() + 600)
    chain.verifier.token.permit(permit)  # a relayer pays the gas
    assert token.allowance(owner.address, spender.address) == 123
    chain.stranger.token.transfer_from(owner.address, spender.address, 100)
    assert token.balance_of(spender.address) == 100
    assert token.allowance(owner.address, spender.address) == 23


def test_views_of_the_wiring(chain: ChainSystem) -> None:
    leases, deployment = chain.client().leases, chain.deployment
    assert leases.token() == deployment.token
    assert leases.node_registry() == deployment.node_registry
    assert leases.attestation_registry() == deployment.attestation_registry
    assert chain.client().service.registry() == deployment.attestation_registry
    assert chain.client().nodes.max_slash_bps() == 5_000
    assert chain.client().nodes.max_unbonding_delay() == 30 * 86_400
    lease_id = chain.attested_lease()
    assert chain.client().attestations.status_of(lease_id) == AttestationStatus.VERIFIED


def test_lease_events_are_read_by_their_indexed_topics(chain: ChainSystem) -> None:
    leases = chain.client().leases
    first = chain.active_lease()
    second = chain.open_lease()
    start = chain.deployment.start_block
    renter, node = chain.accounts.renter.address, chain.accounts.node_key.address
    assert leases.leases_created_by(renter, start) == [first, second]
    assert leases.leases_created_by(chain.accounts.stranger.address, start) == []
    assert leases.leases_accepted_by(node, start) == [first]
    terms = leases.lease_terms(second, start)
    assert (terms.lease_id, terms.renter) == (second, renter)
    assert terms.spec == LEASE_SPEC
    assert terms.expected_measurement == MEASUREMENT
    with pytest.raises(ChainError, match="no LeaseCreated event for lease 999"):
        leases.lease_terms(999, start)
