"""Python bindings of the cvm contracts: build, deploy, typed clients, events, errors.

    from cvm.chain import Anvil, ChainClient, deploy
    with Anvil() as node:
        deployment = deploy(node.w3, node.dev_account(0))
        client = ChainClient(node.w3, deployment, node.dev_account(1))

Every failure is a `ChainError`; a revert is a `ContractRevert` named after the custom
error (`LeaseMarket_DepositTooLow(...)`), decoded from the ABIs of all shipped contracts.
"""

from cvm.chain.anvil import Anvil, find_anvil
from cvm.chain.artifacts import Artifact, artifact_names, load_artifact, revert_decoder
from cvm.chain.attestation_court import AttestationCourtClient, VerifierStake
from cvm.chain.attestation_registry import AttestationRegistryClient
from cvm.chain.attested_service import AttestedServiceClient
from cvm.chain.client import ChainClient, event_decoder
from cvm.chain.connection import (
    ChainUnreachable,
    WrongNetwork,
    check_network,
    connect,
    open_web3,
    resolve_rpc_url,
)
from cvm.chain.contract import TxResult
from cvm.chain.deploy import (
    NO_MEASUREMENT,
    DeployConfig,
    deploy,
    deploy_attested_service,
    deploy_snp_verifier,
)
from cvm.chain.deployment import Deployment
from cvm.chain.errors import ChainError, ContractRevert, RevertDecoder, UnknownRevert
from cvm.chain.events import ChainEvent, EventDecoder
from cvm.chain.guest_result import (
    guest_result_message,
    recover_guest_result,
    sign_guest_result,
    verify_guest_result,
)
from cvm.chain.key_service import HolderInfo, KeyPolicy, KeyServiceClient
from cvm.chain.lease_market import (
    CreatedLease,
    FailedSegment,
    HeldEscrow,
    HeldRelease,
    LeaseMarketClient,
    LeaseTerms,
)
from cvm.chain.node_consent import node_consent_message, sign_node_consent
from cvm.chain.node_registry import NodeRegistryClient
from cvm.chain.sender import TransactionSender, forget_nonces
from cvm.chain.snp_verifier import (
    TX_GAS_CAP,
    OnchainVerdict,
    SnpReportFields,
    SnpVerifierClient,
    StepGas,
)
from cvm.chain.token import Permit, TokenClient
from cvm.chain.types import (
    Attestation,
    AttestationProgress,
    AttestationStatus,
    CloseReason,
    DisputeTerms,
    Lease,
    LeaseSpec,
    LeaseStatus,
    Node,
    NodeSpec,
    NodeUsage,
    SubmissionInfo,
    TeeType,
)

__all__ = [
    "NO_MEASUREMENT",
    "TX_GAS_CAP",
    "Anvil",
    "Artifact",
    "Attestation",
    "AttestationCourtClient",
    "AttestationProgress",
    "AttestationRegistryClient",
    "AttestationStatus",
    "AttestedServiceClient",
    "ChainClient",
    "ChainError",
    "ChainEvent",
    "ChainUnreachable",
    "CloseReason",
    "ContractRevert",
    "CreatedLease",
    "DeployConfig",
    "Deployment",
    "DisputeTerms",
    "EventDecoder",
    "FailedSegment",
    "HeldEscrow",
    "HeldRelease",
    "HolderInfo",
    "KeyPolicy",
    "KeyServiceClient",
    "Lease",
    "LeaseMarketClient",
    "LeaseSpec",
    "LeaseStatus",
    "LeaseTerms",
    "Node",
    "NodeRegistryClient",
    "NodeSpec",
    "NodeUsage",
    "OnchainVerdict",
    "Permit",
    "RevertDecoder",
    "SnpReportFields",
    "SnpVerifierClient",
    "StepGas",
    "SubmissionInfo",
    "TeeType",
    "TokenClient",
    "TransactionSender",
    "TxResult",
    "UnknownRevert",
    "VerifierStake",
    "WrongNetwork",
    "artifact_names",
    "check_network",
    "connect",
    "deploy",
    "deploy_attested_service",
    "deploy_snp_verifier",
    "event_decoder",
    "find_anvil",
    "forget_nonces",
    "guest_result_message",
    "load_artifact",
    "node_consent_message",
    "open_web3",
    "recover_guest_result",
    "resolve_rpc_url",
    "revert_decoder",
    "sign_guest_result",
    "sign_node_consent",
    "verify_guest_result",
]
