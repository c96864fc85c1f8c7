"""Disputes of attestation verdicts, off chain: what the EVM can decide, what it will decide
for a verdict we checked ourselves, and the certificates a dispute carries.

The verifiers' quorum decides fast; the EVM is the court of appeal (`dispute` on the
attestation registry re-checks the report in `SnpVerifier` and the lease binding). Both the
backend's watcher and `cvm attestation dispute` decide here whether a disagreement is worth a
bond: the EVM checks the signature and certificate chain (not the certificates' dates), the
measurement against the lease, REPORT_DATA (lease, nonce, guest key hash), the guest key's
signer against the one submitted, HOST_DATA and the debug bit. A verdict that rests only on
what the chain cannot see (a guest key reused by another lease, an expired certificate, a
minimum TCB, missing evidence) cannot be overturned there, so nobody should bet a bond on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from web3.exceptions import ContractLogicError, Web3Exception

from cvm.attestation.appraisal import Appraisal, appraise_lease_evidence
from cvm.attestation.binding import GuestKey, GuestKeyError
from cvm.attestation.endorsement import load_certificate, load_certificates
from cvm.attestation.errors import AttestationError, Reason
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.trust import amd_intermediates
from cvm.chain.artifacts import revert_decoder
from cvm.chain.client import ChainClient
from cvm.chain.contract import ContractClient, TxResult
from cvm.chain.errors import ChainError
from cvm.chain.sender import revert_error

# The reasons of the off-chain check that the EVM's check decides the same way. The
# backend verifier's own codes for the bundle's lease metadata (a bundle naming another
# lease, chain, registry or nonce) are REPORT_DATA mismatches on chain.
CHAIN_DECIDABLE: frozenset[str] = frozenset(
    {
        Reason.MALFORMED_REPORT,
        Reason.UNSIGNED_REPORT,
        Reason.SIGNER_MISMATCH,
        Reason.UNKNOWN_PRODUCT,
        Reason.PRODUCT_MISMATCH,
        Reason.UNTRUSTED_ROOT,
        Reason.CHAIN_INVALID,
        Reason.SIGNATURE_INVALID,
        Reason.TCB_MISMATCH,
        Reason.CHIP_ID_MISMATCH,
        Reason.MEASUREMENT_MISMATCH,
        Reason.REPORT_DATA_MISMATCH,
        Reason.BINDING_MISMATCH,
        Reason.HOST_DATA_MISMATCH,
        Reason.GUEST_SIGNER_MISMATCH,
        Reason.DEBUG_ALLOWED,
        "LEASE_MISMATCH",
        "CHAIN_MISMATCH",
        "REGISTRY_MISMATCH",
        "NONCE_MISMATCH",
    }
)


class Verdict(StrEnum):
    """A verdict on chain (the attestation's status once the quorum decided)."""

    VERIFIED = "verified"
    REJECTED = "rejected"


class Action(StrEnum):
    """What a checker does about a verdict it re-checked."""

    AGREE = "agree"  # our check says the same: nothing to dispute
    DISPUTE = "dispute"  # we disagree and the EVM will side with us: dispute it
    NOT_DISPUTABLE = "not_disputable"  # we disagree, but only on what the EVM cannot see


@dataclass(frozen=True)
class Assessment:
    """Our check of a verdict and what the chain will decide if it is disputed."""

    verdict: Verdict
    ok: bool  # our own (off-chain) check passed
    reasons: tuple[str, ...]  # its failure codes
    action: Action
    explanation: str

    @property
    def chain_overturns(self) -> bool | None:
        """Whether the EVM would reverse the verdict if disputed (None: we agree with it, so
        a dispute would lose its bond unless the EVM sees less than we do)."""
        if self.action is Action.DISPUTE:
            return True
        if self.action is Action.NOT_DISPUTABLE:
            return False
        return None


def assess(verdict: Verdict | str, ok: bool, reasons: list[str] | tuple[str, ...]) -> Assessment:
    """Compare our off-chain check (`ok`, `reasons`) with the chain's `verdict`."""
    verdict = Verdict(verdict)
    reasons = tuple(reasons)
    decidable = sorted(set(reasons) & CHAIN_DECIDABLE)
    if verdict is Verdict.VERIFIED and ok:
        return Assessment(
            verdict, ok, reasons, Action.AGREE, "the report is good: Verified is right"
        )
    if verdict is Verdict.REJECTED and not ok:
        return Assessment(
            verdict,
            ok,
            reasons,
            Action.AGREE,
            f"the report fails ({', '.join(reasons)}): Rejected is right",
        )
    if verdict is Verdict.REJECTED:
        return Assessment(
            verdict,
            ok,
            reasons,
            Action.DISPUTE,
            "the report passes every check: the EVM will find it good and reverse Rejected",
        )
    if decidable:
        return Assessment(
            verdict,
            ok,
            reasons,
            Action.DISPUTE,
            f"the report fails {', '.join(decidable)}, which the EVM checks: it will reverse"
            " Verified",
        )
    return Assessment(
        verdict,
        ok,
        reasons,
        Action.NOT_DISPUTABLE,
        f"the report fails only {', '.join(reasons)}, which the EVM cannot check: a dispute would"
        " lose its bond",
    )


@dataclass(frozen=True)
class EvidenceCheck:
    """The full off-chain check of one submission's evidence (as a verifier votes)."""

    ok: bool
    reasons: tuple[str, ...]
    messages: tuple[str, ...]
    appraisal: Appraisal


def check_evidence(
    bundle: EvidenceBundle,
    *,
    chain_id: int,
    registry: str,
    lease_id: int,
    nonce: int,
    renter: str,
    measurement: bytes,
    submitted_signer: str | None,
    trusted_roots: Sequence[x509.Certificate] | None = None,
) -> EvidenceCheck:
    """The verifier's check of `bundle` for the submission the chain recorded: the bundle
    names this deployment, lease and nonce; the report verifies to AMD (or `trusted_roots`)
    and satisfies the lease's policy; the guest key's signer is the one submitted. What
    the chain says (`chain_id` .. `submitted_signer`) comes from the chain, not the bundle."""
    reasons: list[str] = []
    messages: list[str] = []

    def mismatch(code: str, what: str, expected: object, found: object) -> None:
        reasons.append(code)
        messages.append(f"{what}: expected {expected}, found {found}")

    if bundle.lease_id != lease_id:
        mismatch("LEASE_MISMATCH", "lease id", lease_id, bundle.lease_id)
    if bundle.chain_id != chain_id:
        mismatch("CHAIN_MISMATCH", "chain id", chain_id, bundle.chain_id)
    if bundle.registry.lower() != registry.lower():
        mismatch("REGISTRY_MISMATCH", "registry", registry, bundle.registry)
    if bundle.nonce != nonce:
        mismatch("NONCE_MISMATCH", "attestation nonce", nonce, bundle.nonce)
    appraisal = appraise_lease_evidence(
        bundle, measurement=measurement, renter=renter, trusted_roots=trusted_roots
    )
    for failure in appraisal.failures:
        reasons.append(str(failure.reason))
        messages.append(failure.message)
    try:
        made: str | None = GuestKey.parse(bundle.guest_key).signer
    except GuestKeyError:
        made = None  # GUEST_KEY_MALFORMED, from the appraisal
    if made is not None and (submitted_signer is None or submitted_signer.lower() != made.lower()):
        mismatch(str(Reason.GUEST_SIGNER_MISMATCH), "attested signer", made, submitted_signer)
    ok = appraisal.ok and not reasons
    return EvidenceCheck(ok, tuple(reasons), tuple(messages), appraisal)


class DisputeEvidenceError(ValueError):
    """The evidence cannot make a dispute (no endorsement key or intermediate certificate)."""


def dispute_certificates(bundle: EvidenceBundle) -> list[bytes]:
    """The certificates a dispute carries, DER: [VCEK or VLEK, ASK or ASVK] (the ARK is
    pinned on chain). The intermediate is the bundle chain's certificate that is not
    self-signed and issued the endorsement key, else AMD's built-in one that did."""
    try:
        endorsement = load_certificate(bundle.vcek)
        chain = load_certificates(bundle.chain) if bundle.chain else []
    except AttestationError as exc:
        raise DisputeEvidenceError(
            f"the evidence's certificates do not parse: {exc.message}"
        ) from None
    # The issuer of the VCEK/VLEK: from the bundle's chain, else AMD's own ASK or ASVK.
    candidates = [cert for cert in chain if cert.issuer != cert.subject]
    candidates += amd_intermediates()
    issuer = next((c for c in candidates if c.subject == endorsement.issuer), None)
    if issuer is None:
        raise DisputeEvidenceError(
            "no ASK or ASVK for the evidence's endorsement key (neither in its chain nor AMD's)"
        )
    return [endorsement.public_bytes(Encoding.DER), issuer.public_bytes(Encoding.DER)]


# --- on chain --------------------------------------------------------------------------------
# The registry's dispute entry point and its bond, by their ABI names (INTERFACES.md):
# `dispute(leaseId, reportHash, report, certs, guestKey)`, the bond taken in the bond token
# (an ERC-20 `transferFrom`, approved here first) or, if the function is payable, in ether.
DISPUTE_FUNCTION = "dispute"
_BOND_VIEWS = ("disputeBond", "DISPUTE_BOND", "bond")


def _registry(client: ChainClient) -> ContractClient:
    """The contract that takes disputes (the attestation registry)."""
    return client.attestations


def _abi_entry(contract: ContractClient, name: str) -> dict[str, Any] | None:
    for entry in contract.contract.abi:
        if entry.get("type") == "function" and entry.get("name") == name:
            return dict(entry)
    return None


def supports_disputes(client: ChainClient) -> bool:
    """Whether the deployment's registry takes disputes (its ABI has `dispute`)."""
    return _abi_entry(_registry(client), DISPUTE_FUNCTION) is not None


def dispute_bond(client: ChainClient) -> int:
    """The bond a dispute posts (in the stake token, or wei if `dispute` is payable)."""
    registry = _registry(client)
    if _abi_entry(registry, "disputeTerms") is not None:
        terms = registry.contract.functions["disputeTerms"]().call()
        return int(terms[1] if isinstance(terms, list | tuple) else terms["bond"])
    for name in _BOND_VIEWS:
        if _abi_entry(registry, name) is not None:
            return int(registry.contract.functions[name]().call())
    return 0


@dataclass(frozen=True)
class Submission:
    """One submission's verdict as a dispute reads it (the registry's `submissionOf`)."""

    number: int  # 1-based; the nonce its report binds is number - 1; 0 if unknown
    verdict: str  # none | pending | verified | rejected | expired
    signer: str
    submitted_at: int
    disputable_until: int
    disputed: bool
    confirmed_on_chain: bool

    @property
    def nonce(self) -> int:
        return max(0, self.number - 1)


_STATUS_NAMES = ("none", "pending", "verified", "rejected", "expired")


def submission_of(client: ChainClient, lease_id: int, report_hash: bytes) -> Submission | None:
    """The registry's record of the submission of `report_hash` for `lease_id` (None on a
    deployment without disputes or for a report never submitted there)."""
    registry = _registry(client)
    if _abi_entry(registry, "submissionOf") is None:
        return None
    try:
        raw = registry.contract.functions["submissionOf"](lease_id, report_hash).call()
    except ContractLogicError as exc:
        raise revert_error(exc, revert_decoder()) from None
    except Web3Exception as exc:
        raise ChainError(f"submissionOf failed: {exc}") from exc
    number, verdict, signer, submitted_at, until, _banked, disputed, confirmed = tuple(raw)
    if int(number) == 0:
        return None
    return Submission(
        number=int(number),
        verdict=_STATUS_NAMES[int(verdict)] if int(verdict) < len(_STATUS_NAMES) else "none",
        signer=str(signer),
        submitted_at=int(submitted_at),
        disputable_until=int(until),
        disputed=bool(disputed),
        confirmed_on_chain=bool(confirmed),
    )


def _dispute_call(client: ChainClient, lease_id: int, bundle: EvidenceBundle) -> Any:
    registry = _registry(client)
    if _abi_entry(registry, DISPUTE_FUNCTION) is None:
        raise ChainError("this deployment's attestation registry takes no disputes")
    certs = dispute_certificates(bundle)
    return registry.contract.functions[DISPUTE_FUNCTION](
        lease_id, bundle.report_hash, bundle.report, certs, bundle.guest_key
    )


def _payable(client: ChainClient) -> bool:
    entry = _abi_entry(_registry(client), DISPUTE_FUNCTION) or {}
    return entry.get("stateMutability") == "payable"


def _approve_bond(client: ChainClient) -> int:
    """Make sure the registry may take the bond; returns the ether value to send with it."""
    bond = dispute_bond(client)
    if _payable(client):
        return bond
    owner = client.address
    spender = _registry(client).address
    if bond > 0 and owner is not None and client.token.allowance(owner, spender) < bond:
        client.token.approve(spender, bond)
    return 0


def preview_dispute(client: ChainClient, lease_id: int, bundle: EvidenceBundle) -> bool | None:
    """What the registry would decide if `client`'s account disputed now (an eth_call after
    approving the bond): True reverses the verdict, False upholds it, None if the call
    returns no outcome. A refusal (window passed, already disputed) is a `ChainError`."""
    value = _approve_bond(client)
    function = _dispute_call(client, lease_id, bundle)
    try:
        result = function.call({"from": client.address, "value": value})
    except ContractLogicError as exc:
        raise revert_error(exc, revert_decoder()) from None
    except Web3Exception as exc:
        raise ChainError(f"dispute preview failed: {exc}") from exc
    if isinstance(result, bool):
        return result
    if isinstance(result, list | tuple) and result and isinstance(result[0], bool):
        return bool(result[0])
    return None


def send_dispute(client: ChainClient, lease_id: int, bundle: EvidenceBundle) -> TxResult:
    """Dispute the verdict on `bundle`'s report from `client`'s account, bond included."""
    value = _approve_bond(client)
    function = _dispute_call(client, lease_id, bundle)
    if client.sender is None:
        raise ChainError("disputing needs an account")
    receipt = client.sender.transact(function, value=value)
    return TxResult.from_receipt(receipt, client.events)
