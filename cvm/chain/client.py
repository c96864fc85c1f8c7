"""`ChainClient`: one object with a typed client per cvm contract, for one account.

client = ChainClient(w3, deployment, account)   # account=None: read-only
lease = client.leases.create_lease(spec, max_price, deposit, measurement)
client.with_account(node_key).leases.accept_lease(lease.lease_id)
"""

from __future__ import annotations

from functools import cache

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import BlockIdentifier

from cvm.chain.artifacts import load_artifact, revert_decoder
from cvm.chain.attestation_court import AttestationCourtClient
from cvm.chain.attestation_registry import AttestationRegistryClient
from cvm.chain.attested_service import AttestedServiceClient
from cvm.chain.deployment import Deployment
from cvm.chain.events import ChainEvent, EventDecoder
from cvm.chain.key_service import KeyServiceClient
from cvm.chain.lease_market import LeaseMarketClient
from cvm.chain.node_registry import NodeRegistryClient
from cvm.chain.sender import TransactionSender
from cvm.chain.snp_verifier import SnpVerifierClient
from cvm.chain.token import TokenClient


@cache
def event_decoder(deployment: Deployment) -> EventDecoder:
    """A decoder of the events of every contract in `deployment` (one per deployment)."""
    return EventDecoder(
        {
            name: (address, load_artifact(name).abi)
            for name, address in deployment.contracts().items()
        }
    )


class ChainClient:
    """Typed access to a deployment: `token`, `nodes`, `leases`, `attestations`, `service`."""

    def __init__(
        self, w3: Web3, deployment: Deployment, account: LocalAccount | None = None
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.account = account
        self.events = event_decoder(deployment)
        sender = TransactionSender(w3, account, revert_decoder()) if account else None
        self.sender = sender
        self.token = TokenClient(w3, deployment.token, self.events, sender)
        self.nodes = NodeRegistryClient(w3, deployment.node_registry, self.events, sender)
        self.leases = LeaseMarketClient(w3, deployment.lease_market, self.events, sender)
        self.attestations = AttestationRegistryClient(
            w3, deployment.attestation_registry, self.events, sender
        )
        self.service = AttestedServiceClient(w3, deployment.attested_service, self.events, sender)
        # The on-chain SEV-SNP report check; None for a record from before it was deployed.
        self.snp: SnpVerifierClient | None = (
            SnpVerifierClient(w3, deployment.snp_verifier, self.events, sender)
            if deployment.snp_verifier
            else None
        )
        # Verifier stake and disputes (None for a deployment recorded without a court).
        self.court: AttestationCourtClient | None = (
            AttestationCourtClient(w3, deployment.attestation_court, self.events, sender)
            if deployment.attestation_court
            else None
        )

        # Key holders and key-release policies (None for a deployment recorded without it).
        self.keys: KeyServiceClient | None = (
            KeyServiceClient(w3, deployment.key_service, self.events, sender)
            if deployment.key_service
            else None
        )

    def __repr__(self) -> str:
        who = self.account.address if self.account else "read-only"
        return f"ChainClient(chain {self.deployment.chain_id}, {who})"

    @property
    def address(self) -> str | None:
        """The account's address (None for a read-only client)."""
        return self.account.address if self.account else None

    def with_account(self, account: LocalAccount | None) -> ChainClient:
        """The same deployment and connection, acting as `account`."""
        return ChainClient(self.w3, self.deployment, account)

    def fetch_events(self, from_block: int, to_block: int | str = "latest") -> list[ChainEvent]:
        """Every cvm event in the block range (inclusive), in chain order."""
        return self.events.fetch(self.w3, from_block, to_block)

    def block_timestamp(self, block: BlockIdentifier = "latest") -> int:
        """The timestamp of `block`."""
        return int(self.w3.eth.get_block(block)["timestamp"])
