"""Deploying the whole cvm system to any RPC.

`deploy` puts up the token (a fresh `TestToken` unless an existing token is given), the
on-chain SEV-SNP report check (`SnpVerifier`, pinned to AMD's ARKs), the node registry, the
attestation registry, the lease market, the example consumer and the attestation court
(verifier stake and disputes, judged by the SnpVerifier) and the key service (key holders and
key-release policies), wires them together and registers
and stakes the verifiers, all from one deployer account that becomes owner and admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from cvm.attestation.onchain import ark_certificates
from cvm.chain.artifacts import load_artifact, revert_decoder
from cvm.chain.client import ChainClient
from cvm.chain.deployment import Deployment
from cvm.chain.errors import ChainError
from cvm.chain.sender import TransactionSender
from cvm.config import MEASUREMENT_BYTES

# A measurement nobody launches: the example consumer deployed without a real one trusts nothing.
NO_MEASUREMENT = bytes(48)


@dataclass(frozen=True)
class DeployConfig:
    """Parameters of a deployment. Defaults suit a local chain."""

    # Existing ERC-20 with EIP-2612 permit to pay and stake in; None deploys a TestToken.
    token: str | None = None
    min_stake: int = 100 * 10**18
    # At least LeaseMarket.minUnbondingDelay (the longest dispute window, 7 days, plus an hour).
    unbonding_delay: int = 8 * 24 * 3600
    slash_bps: int = 1_000
    attestation_window: int = 600
    quorum: int = 1
    verifiers: Sequence[str] = ()
    # The launch measurement the example consumer (AttestedService) trusts.
    example_measurement: bytes = NO_MEASUREMENT
    # The self-signed ARK certificates (DER) SnpVerifier pins: AMD's Milan, Genoa and Turin.
    snp_ark_certificates: Sequence[bytes] = field(default_factory=ark_certificates)
    # What the deployer stakes for each verifier in the court (a verifier votes only with at
    # least the registry's minimum verifier stake, 1 token by default).
    verifier_stake: int = 10**18
    # Seconds a challenged node has to attest afresh (AttestationRegistry.CHALLENGE_WINDOW, fixed
    # at deployment: 30 s to 1 day); shorten it for tests and benches of failover.
    challenge_window_s: int = 900
    # KeyService: the active stake a key holder needs, and how long unstaked holder stake waits.
    min_holder_stake: int = 10**18
    holder_unbonding_delay: int = 24 * 3600


def _deploy_contract(sender: TransactionSender, name: str, *args: Any) -> str:
    artifact = load_artifact(name)
    factory = sender.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    data = factory.constructor(*args).data_in_transaction
    receipt = sender.send({"data": data, "value": 0})
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(f"deploying {name} produced no contract")
    return Web3.to_checksum_address(address)


def deploy(
    w3: Web3,
    deployer: LocalAccount,
    config: DeployConfig | None = None,
    *,
    rpc_url: str | None = None,
) -> Deployment:
    """Deploy and wire the whole system from `deployer`, who becomes owner and admin."""
    config = config or DeployConfig()
    sender = TransactionSender(w3, deployer, revert_decoder())
    start_block = int(w3.eth.block_number) + 1
    token = config.token or _deploy_contract(sender, "TestToken")
    # First, so that the registries can be given its address.
    snp_verifier = _deploy_contract(sender, "SnpVerifier", list(config.snp_ark_certificates))
    registry = _deploy_contract(
        sender,
        "NodeRegistry",
        token,
        deployer.address,
        config.min_stake,
        config.unbonding_delay,
        config.slash_bps,
    )
    attestations = _deploy_contract(
        sender, "AttestationRegistry", deployer.address, config.quorum, config.challenge_window_s
    )
    market = _deploy_contract(
        sender, "LeaseMarket", token, registry, attestations, deployer.address,
        config.attestation_window,
    )  # fmt: skip
    service = _deploy_contract(sender, "AttestedService", attestations, config.example_measurement)
    court = _deploy_contract(sender, "AttestationCourt", snp_verifier, attestations, token)
    keys = _deploy_contract(
        sender, "KeyService", token, market, attestations, config.min_holder_stake,
        config.holder_unbonding_delay,
    )  # fmt: skip
    deployment = Deployment(
        chain_id=sender.chain_id,
        deployer=deployer.address,
        start_block=start_block,
        token=token,
        node_registry=registry,
        attestation_registry=attestations,
        lease_market=market,
        attested_service=service,
        test_token=config.token is None,
        rpc_url=rpc_url,
        snp_verifier=snp_verifier,
        attestation_court=court,
        key_service=keys,
    )
    admin = ChainClient(w3, deployment, deployer)
    admin.nodes.set_lease_market(market)
    admin.attestations.set_lease_market(market)
    admin.attestations.set_court(court)
    # Set once: the key service decides (by each lease's policy) whether a lease may fail over.
    admin.leases.set_key_service(keys)
    stake = config.verifier_stake * len(config.verifiers)
    if stake:
        if config.token is None:
            admin.token.mint(deployer.address, stake)
        admin.token.approve(court, stake)
    for verifier in config.verifiers:
        admin.attestations.add_verifier(verifier)
        if config.verifier_stake:
            # Only staked verifiers vote (issue 21): the deployer stakes for each.
            assert admin.court is not None
            admin.court.stake_for(verifier, config.verifier_stake)
    return deployment


def deploy_snp_verifier(w3: Web3, deployer: LocalAccount, ark_certificates: Sequence[bytes]) -> str:
    """Deploy a `SnpVerifier` pinned to `ark_certificates` (self-signed ARKs, DER) on its own
    (`deploy` puts one, pinned to AMD's, into every system); its address."""
    return _deploy_contract(
        TransactionSender(w3, deployer, revert_decoder()), "SnpVerifier", list(ark_certificates)
    )


def deploy_attested_service(chain: ChainClient, measurement: bytes) -> ChainClient:
    """Deploy an example consumer (`AttestedService`) of `chain`'s attestation registry that
    trusts `measurement` (your image's), from `chain`'s account; a client of the same
    deployment whose `service` is the new contract."""
    if len(measurement) != MEASUREMENT_BYTES:
        raise ValueError(f"a measurement is {MEASUREMENT_BYTES} bytes, got {len(measurement)}")
    if chain.sender is None:
        raise ChainError("deploying needs an account")
    address = _deploy_contract(
        chain.sender, "AttestedService", chain.deployment.attestation_registry, measurement
    )
    return ChainClient(chain.w3, replace(chain.deployment, attested_service=address), chain.account)
