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

from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives.serialization import Encoding

from cvm.attestation.endorsement import load_certificate, load_certificates
from cvm.attestation.errors import AttestationError, Reason
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.trust import amd_intermediates

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
