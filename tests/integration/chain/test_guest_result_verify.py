"""Off-chain check of a result signed inside the guest (`verify_guest_result`,
`AttestationClient.verify_result`) and a dApp's own `AttestedService` trusting its image
(`deploy_attested_service`), against a real anvil deployment.

Before these existed a dApp had no way, short of posting a transaction, to tell a result
signed by the guest's attested signer from one signed by the node key: these tests fail
there (ImportError) and each refusal below is one that must not pass."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from cvm.chain import (
    ChainError,
    ContractRevert,
    deploy_attested_service,
    recover_guest_result,
    sign_guest_result,
    verify_guest_result,
)
from cvm.sdk import AttestationClient, InvalidArgument
from tests.fixtures.chain import GUEST_SIGNER, MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration

REQUEST, RESULT = b"\x07" * 32, b"the answer: 42"
REPORT = b"\x31" * 32
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _signed(chain: ChainSystem, account: LocalAccount, lease_id: int, **change: bytes) -> bytes:
    deployment = chain.deployment
    return sign_guest_result(
        account,
        lease_id,
        change.get("request", REQUEST),
        change.get("result", RESULT),
        deployment.chain_id,
        deployment.attestation_registry,
    )


def _attested(chain: ChainSystem, *, staked: bool = False) -> int:
    lease_id = chain.open_lease() if staked else chain.active_lease()
    if staked:
        chain.node.leases.accept_lease(lease_id)
    chain.submit(lease_id, REPORT)
    chain.verifier.attestations.confirm(lease_id, REPORT, True)
    return lease_id


def test_only_the_attested_signers_result_verifies(chain: ChainSystem) -> None:
    reader = chain.client()
    sdk = AttestationClient(chain.anvil.rpc_url, chain.deployment.attestation_registry)
    lease_id = chain.active_lease()
    good = _signed(chain, GUEST_SIGNER, lease_id)

    def both(signature: bytes, lease: int = lease_id, **kwargs: bytes) -> tuple[bool, bool]:
        request, result = kwargs.get("request", REQUEST), kwargs.get("result", RESULT)
        measurement = kwargs.get("measurement")
        return (
            verify_guest_result(
                reader, lease, request, result, signature, expected_measurement=measurement
            ),
            sdk.verify_result(lease, request, result, signature, expected_measurement=measurement),
        )

    # Not attested yet: the guest's own key is not vouched for.
    assert both(good) == (False, False)
    chain.submit(lease_id, REPORT)
    assert both(good) == (False, False), "pending is not attested"
    chain.verifier.attestations.confirm(lease_id, REPORT, True)

    assert both(good) == (True, True)
    assert both(good, measurement=MEASUREMENT) == (True, True)
    assert both(good, measurement=bytes(48)) == (False, False), "another image's measurement"
    # The node key (what an operator renting its own node holds) never passes.
    assert both(_signed(chain, chain.accounts.node_key, lease_id)) == (False, False)
    # Another lease's signature, another result, another request: each refused.
    other = _attested(chain, staked=True)  # with the same guest signer
    assert both(_signed(chain, GUEST_SIGNER, other)) == (False, False)
    assert both(good, lease=other) == (False, False)
    assert both(good, result=b"the answer: 43") == (False, False)
    assert both(good, request=b"\x08" * 32) == (False, False)
    # Malformed: truncated, v out of range, the high-s twin (ECDSA.recover refuses it on chain).
    r, s, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
    twin = r + (N - s).to_bytes(32, "big") + bytes([55 - v])
    assert recover_guest_result(
        lease_id, REQUEST, RESULT, good, chain.deployment.chain_id,
        chain.deployment.attestation_registry,
    ) == GUEST_SIGNER.address  # fmt: skip
    for bad in (good[:64], good[:64] + b"\x01", twin, bytes(65), good + b"\x00"):
        assert both(bad) == (False, False), bad.hex()
    with pytest.raises(ValueError):
        verify_guest_result(reader, lease_id, b"\x07" * 31, RESULT, good)
    with pytest.raises(InvalidArgument):
        sdk.verify_result(lease_id, b"\x07" * 31, RESULT, good)

    # What verifies off chain is what the contract takes, and what does not is refused there.
    with pytest.raises(ContractRevert) as twin_refused:
        chain.stranger.service.post_result(lease_id, REQUEST, RESULT, twin)
    assert twin_refused.value.name == "AttestedService_NotAttestedSigner"
    posted = chain.stranger.service.post_result(lease_id, REQUEST, RESULT, good)
    assert posted.event("ResultPosted").args["signer"] == GUEST_SIGNER.address


def test_a_dapp_deploys_its_own_service_trusting_its_image(chain: ChainSystem) -> None:
    lease_id = _attested(chain)
    mine = deploy_attested_service(chain.stranger, MEASUREMENT)
    assert mine.service.address != chain.deployment.attested_service
    assert mine.service.expected_measurement() == MEASUREMENT
    assert mine.service.registry() == chain.deployment.attestation_registry
    posted = mine.service.post_result(
        lease_id, REQUEST, RESULT, _signed(chain, GUEST_SIGNER, lease_id)
    )
    assert posted.event("ResultPosted").args["resultHash"] == keccak(RESULT)
    assert mine.service.result_of(lease_id) == keccak(RESULT)

    # Trusting another image: the same lease's result is refused.
    other = deploy_attested_service(chain.stranger, b"\x99" * 48)
    with pytest.raises(ContractRevert) as refused:
        again = b"\x09" * 32
        other.service.post_result(
            lease_id, again, RESULT, _signed(chain, GUEST_SIGNER, lease_id, request=again)
        )
    assert refused.value.name == "AttestedService_NotAttested"

    with pytest.raises(ValueError):
        deploy_attested_service(chain.stranger, b"\x99" * 47)
    with pytest.raises(ChainError):
        deploy_attested_service(chain.client(), MEASUREMENT)
