"""Disputes of attestation verdicts, off chain: what the EVM can decide, what it will decide
for a verdict we checked ourselves, and the certificates a dispute carries.

The verifiers' quorum decides fast; the EVM is the court of appeal (`dispute` on the
attestation court re-checks the report in `SnpVerifier` and the lease binding). Both the
backend's watcher and `cvm attestation dispute` decide here whether a disagreement is worth a
bond: the EVM checks the signature and certificate chain (not the certificates' dates), the
measurement against the lease, REPORT_DATA (lease, nonce, guest key hash), the guest key's
signer against the one submitted, HOST_DATA, VMPL 0 and the debug bit. A verdict that rests
only on what the chain cannot see (a guest key reused by another lease, an expired certificate, a
minimum TCB, missing evidence) cannot be overturned there, so nobody should bet a bond on it.

`check_evidence` is the verifiers' check itself, deciding as `AttestationCourt.truth` does: a
failure it reports is voted Rejected only when the EVM would fail the report too
(`EvidenceCheck.undecided` otherwise), since the node would overturn any other rejection.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from eth_utils import keccak, to_checksum_address
from web3.exceptions import ContractLogicError, Web3Exception

from cvm.attestation.abi import Report, parse
from cvm.attestation.appraisal import Appraisal, appraise, lease_policy
from cvm.attestation.binding import GUEST_KEY_SIZE, GuestKey, GuestKeyError, lease_digest
from cvm.attestation.endorsement import (
    load_certificate,
    load_certificates,
    parse_endorsement_key,
)
from cvm.attestation.errors import AttestationError, Reason
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.onchain import rsa_key_hash
from cvm.attestation.product import Product
from cvm.attestation.trust import amd_intermediates, amd_roots
from cvm.attestation.validate import Failure
from cvm.attestation.verify import verify_amd_signature
from cvm.chain.artifacts import revert_decoder
from cvm.chain.attestation_court import AttestationCourtClient, Challenge
from cvm.chain.client import ChainClient
from cvm.chain.contract import TxResult
from cvm.chain.errors import ChainError, ContractRevert
from cvm.chain.sender import revert_error
from cvm.chain.snp_verifier import SnpVerifierClient
from cvm.chain.types import SubmissionInfo

# The verifier's codes for a bundle that names another lease, chain, registry or nonce than
# the submission the chain recorded (besides `cvm.attestation.Reason`'s).
LEASE_MISMATCH = "LEASE_MISMATCH"
CHAIN_MISMATCH = "CHAIN_MISMATCH"
REGISTRY_MISMATCH = "REGISTRY_MISMATCH"
NONCE_MISMATCH = "NONCE_MISMATCH"
# The bundle's guest key is not the one REPORT_DATA[32:64] binds: what the guest's key says
# (its signer) is unknown here, and the EVM takes the key from whoever disputes.
GUEST_KEY_UNKNOWN = "GUEST_KEY_UNKNOWN"
# REPORT_DATA binds the bundle's 116-byte key, with the submitted signer, but its keys are not
# usable (`GuestKey.parse`): the EVM, which checks only its length and signer, finds it genuine.
GUEST_KEY_UNUSABLE = "GUEST_KEY_UNUSABLE"
# The attested signer the node submitted with the report is not known to the checker (its
# event not indexed): the EVM compares the key with the one it recorded.
SIGNER_UNKNOWN = "SIGNER_UNKNOWN"

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
        # Only as `check_evidence` reports it: no key the EVM could take hashes to REPORT_DATA.
        Reason.GUEST_KEY_MALFORMED,
        Reason.HOST_DATA_MISMATCH,
        Reason.GUEST_SIGNER_MISMATCH,
        Reason.DEBUG_ALLOWED,
        Reason.VMPL_MISMATCH,
        LEASE_MISMATCH,
        CHAIN_MISMATCH,
        REGISTRY_MISMATCH,
        NONCE_MISMATCH,
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
    # Why no verdict may be drawn from this check (None: `ok` is the verdict): it fails, but
    # on nothing the EVM's check would also fail on (`CHAIN_DECIDABLE`), so a rejection could
    # be overturned, e.g. the bundle's guest key is not the one REPORT_DATA binds.
    undecided: str | None = None


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
    """The verifier's check of `bundle` for the submission the chain recorded, deciding as
    `AttestationCourt.truth` does: the report verifies to AMD (or `trusted_roots`) and
    satisfies the lease's policy (measurement, no debug, VMPL 0, HOST_DATA), REPORT_DATA[0:32]
    binds this deployment, lease and nonce, REPORT_DATA[32:64] is the SHA-256 of a 116-byte
    guest key whose signer is the one submitted. What the chain says (`chain_id` ..
    `submitted_signer`) comes from the chain: the bundle's own lease metadata is ignored (a
    genuine report uploaded under a wrong lease id is this lease's report all the same).

    The guest key: the EVM takes it from whoever disputes, so a bundle key that does not hash
    to REPORT_DATA[32:64] proves nothing either way (the node holds the right one): that alone
    is `GUEST_KEY_UNKNOWN`, undecided. A key that does hash to it is the guest's: its signer
    decides as on chain (`GUEST_SIGNER_MISMATCH`); a key the EVM cannot take at all (not 116
    bytes, or REPORT_DATA[32:64] all zeros) is `GUEST_KEY_MALFORMED`, decided (no dispute can
    prove such a report genuine); a 116-byte key with the right signer but unusable keys
    (`GuestKey.parse`) is `GUEST_KEY_UNUSABLE`, undecided (the EVM would find it genuine)."""
    reasons: list[str] = []
    messages: list[str] = []

    def fail(code: str, message: str) -> None:
        reasons.append(code)
        messages.append(message)

    # Informational only: the bundle's own words about which lease it is.
    named = {
        "lease id": (bundle.lease_id, lease_id),
        "chain id": (bundle.chain_id, chain_id),
        "registry": (bundle.registry.lower(), registry.lower()),
        "attestation nonce": (bundle.nonce, nonce),
    }
    notes = [
        f"note: the bundle names {what} {found}, the chain's submission is {expected}"
        " (checked against the chain's)"
        for what, (found, expected) in named.items()
        if found != expected
    ]
    bound = dataclasses.replace(
        bundle, chain_id=chain_id, registry=registry, lease_id=lease_id, nonce=nonce
    )
    policy = dataclasses.replace(
        lease_policy(bound, measurement=measurement, renter=renter), binding=None
    )
    appraisal = appraise(
        bundle.report,
        bundle.vcek,
        policy,
        chain=bundle.chain or None,
        trusted_roots=trusted_roots,
    )
    failures = list(appraisal.failures)
    if appraisal.verified is not None:
        report_data = appraisal.verified.report.report_data
        expected = lease_digest(chain_id, registry, lease_id, nonce)
        if report_data[:32] != expected:
            failures.append(
                Failure(
                    Reason.BINDING_MISMATCH,
                    f"REPORT_DATA[0:32] is not bound to lease {lease_id} nonce {nonce} on chain"
                    f" {chain_id} registry {registry}: expected {expected.hex()}, found"
                    f" {report_data[:32].hex()}",
                )
            )
    for failure in failures:
        fail(str(failure.reason), failure.message)
    if appraisal.verified is not None:
        _check_guest_key(
            bundle.guest_key, appraisal.verified.report.report_data[32:], submitted_signer, fail
        )
    messages.extend(notes)
    ok = appraisal.ok and not reasons
    undecided: str | None = None
    # (A report its certificates do not verify is `backend.verifier.kds`'s to decide.)
    if not ok and appraisal.verified is not None and not set(reasons) & CHAIN_DECIDABLE:
        undecided = (
            f"the report fails only {', '.join(reasons)}, which the EVM's check does not fail:"
            " a rejection could be overturned"
        )
    return EvidenceCheck(ok, tuple(reasons), tuple(messages), appraisal, undecided)


def _check_guest_key(
    key: bytes,
    bound: bytes,
    submitted_signer: str | None,
    fail: Callable[[str, str], None],
) -> None:
    """REPORT_DATA[32:64] (`bound`) against the bundle's guest key, as `truth` sees it."""
    if not any(bound):
        fail(
            str(Reason.GUEST_KEY_MALFORMED),
            "guest key: REPORT_DATA[32:64] is all zeros: the report binds no guest key",
        )
        return
    if hashlib.sha256(key).digest() != bound:
        fail(
            GUEST_KEY_UNKNOWN,
            f"guest key: the bundle's key (sha256 {hashlib.sha256(key).hexdigest()}) is not the"
            f" one REPORT_DATA[32:64] binds ({bound.hex()}): the guest's own key is unknown here",
        )
        return
    if len(key) != GUEST_KEY_SIZE:
        fail(
            str(Reason.GUEST_KEY_MALFORMED),
            f"guest key: a guest key is {GUEST_KEY_SIZE} bytes, REPORT_DATA binds one of"
            f" {len(key)}",
        )
        return
    made = to_checksum_address(key[64:84])  # as the EVM reads it, parsed or not
    if submitted_signer is None:
        # Not indexed (yet): the chain has one, which is not known here.
        fail(SIGNER_UNKNOWN, f"attested signer: expected {made}, the submitted one is unknown")
    elif submitted_signer.lower() != made.lower():
        fail(
            str(Reason.GUEST_SIGNER_MISMATCH),
            f"attested signer: expected {made}, found {submitted_signer}",
        )
    try:
        GuestKey.parse(key)
    except GuestKeyError as exc:
        fail(GUEST_KEY_UNUSABLE, f"guest key: {exc}")


class DisputeEvidenceError(ValueError):
    """The evidence cannot make a dispute (no endorsement key the chain would accept)."""


@dataclass(frozen=True)
class DisputeCertificates:
    """What a dispute proves the report's key with: the VCEK or VLEK, the ASK or ASVK that
    signed it (DER) and the ARK that signed that (pinned on chain)."""

    signer: bytes
    issuer: bytes
    # None: certificates that prove nothing on chain (`challenge_certificates`): not cached.
    root: x509.Certificate | None

    @property
    def hashes(self) -> list[bytes]:
        """The certificates as the contract takes them once cached: their keccak256."""
        return [bytes(keccak(self.signer)), bytes(keccak(self.issuer))]


# (report, product) -> the chip's genuine VCEK (DER) for the report's CHIP_ID and TCB (AMD's
# KDS, `cvm.attestation.kds.CachingKds.vcek_for`), or None if it cannot be had.
VcekSource = Callable[[Report, Product], bytes | None]


def dispute_certificates(
    bundle: EvidenceBundle,
    *,
    trusted_roots: Sequence[x509.Certificate] | None = None,
    intermediates: Sequence[x509.Certificate] = (),
    vcek_source: VcekSource | None = None,
) -> DisputeCertificates:
    """The certificates a dispute carries: the VCEK or VLEK and the ASK or ASVK (the ARK is
    pinned on chain), proving the report's signing key to a trusted root.

    The bundle's own endorsement key if a trusted intermediate signed it: AMD's, one of
    `intermediates`, or one in the bundle's chain that a trusted root (AMD's, or
    `trusted_roots`) signed. Otherwise the report claims a chip its certificates do not
    prove, and the chip's genuine VCEK for the report's CHIP_ID and TCB (`vcek_source`)
    is what shows the signature false on chain."""
    roots = list(trusted_roots) if trusted_roots is not None else amd_roots()
    # Certificates that do not parse prove nothing: the chip's genuine VCEK may still (below).
    try:
        own: x509.Certificate | None = load_certificate(bundle.vcek)
    except AttestationError:
        own = None
    try:
        chain = load_certificates(bundle.chain) if bundle.chain else []
    except AttestationError:
        chain = []
    trusted = [*amd_intermediates(), *intermediates]
    trusted += [
        cert
        for cert in chain
        if cert.issuer != cert.subject and any(verify_amd_signature(cert, root) for root in roots)
    ]

    def issuer_of(cert: x509.Certificate) -> x509.Certificate | None:
        return next((i for i in trusted if verify_amd_signature(cert, i)), None)

    def proven(signer: x509.Certificate, issuer: x509.Certificate) -> DisputeCertificates:
        root = next((r for r in [*roots, *amd_roots()] if verify_amd_signature(issuer, r)), None)
        if root is None:
            raise DisputeEvidenceError("the intermediate is signed by no trusted root")
        der = Encoding.DER
        return DisputeCertificates(signer.public_bytes(der), issuer.public_bytes(der), root)

    issuer = issuer_of(own) if own is not None else None
    if own is not None and issuer is not None:
        return proven(own, issuer)
    try:
        report = parse(bundle.report)
    except AttestationError as exc:
        raise DisputeEvidenceError(f"not a report: {exc.message}") from None
    product = report.cpuid_product or (_product_of(own) if own is not None else None)
    if vcek_source is None or product is None:
        own_fault = "does not parse" if own is None else "does not chain to a trusted root"
        raise DisputeEvidenceError(
            f"the evidence's endorsement key {own_fault}, and the chip's genuine VCEK cannot"
            " be fetched (no KDS source, or the product is unknown)"
        )
    try:
        genuine_der = vcek_source(report, product)
        genuine = load_certificate(genuine_der) if genuine_der else None
    except AttestationError as exc:
        raise DisputeEvidenceError(
            f"the chip's genuine VCEK is unavailable: {exc.message}"
        ) from None
    issuer = issuer_of(genuine) if genuine is not None else None
    if genuine is None or issuer is None:
        raise DisputeEvidenceError("the chip's genuine VCEK is unavailable or not AMD-signed")
    return proven(genuine, issuer)


def challenge_certificates(bundle: EvidenceBundle) -> DisputeCertificates:
    """The evidence's own certificates as they are, for a dispute of a Verified verdict when no
    certificate could prove the report false on chain (a VLEK-signed report, a masked CHIP_ID,
    no genuine VCEK to be had): the check decides nothing with them, so the dispute opens a
    challenge, and the verdict's defender must prove the report genuine by its deadline."""
    return DisputeCertificates(bytes(bundle.vcek), bytes(bundle.chain), None)


def simulated_intermediates(directory: Path) -> list[x509.Certificate]:
    """The ASKs and ASVKs of a local stack's simulated AMD (tests and demos only)."""
    from cvm.attestation.sim import SimulatedAmd

    simulated = SimulatedAmd(directory)
    return [cert for p in Product for cert in (simulated.ask(p), simulated.asvk(p))]


def _product_of(cert: x509.Certificate) -> Product | None:
    try:
        return parse_endorsement_key(cert).product
    except AttestationError:
        return None


# --- on chain --------------------------------------------------------------------------------
# Disputes go to the attestation court (`IAttestationCourt.dispute`, returning whether the
# verdict was overturned; a Verified verdict the check cannot decide with the disputer's inputs
# is not overturned at once but challenged: its defender must `defend` it by a deadline, else
# anyone `resolve`s it as false); the bond, `registry.disputeTerms().bond` of the stake token, is
# taken by the court (approved here first).


def _court(client: ChainClient) -> AttestationCourtClient | None:
    """The deployment's attestation court (None on a deployment without disputes)."""
    # A record names its court; an older one may not, while its registry does.
    court: AttestationCourtClient | None = getattr(client, "court", None)
    if court is not None:
        return court
    try:
        if not any(e.get("name") == "court" for e in client.attestations.contract.abi):
            return None
        address = client.attestations.court()
    except ChainError:
        return None
    if int(address, 16) == 0:
        return None
    return AttestationCourtClient(client.w3, address, client.events, client.sender)


def supports_disputes(client: ChainClient) -> bool:
    """Whether the deployment takes disputes (it has a court)."""
    return _court(client) is not None


def submission_of(client: ChainClient, lease_id: int, report_hash: bytes) -> SubmissionInfo | None:
    """The registry's record of the submission of `report_hash` for `lease_id` (None on a
    deployment without disputes or for a report never submitted, or no longer kept, there)."""
    if not supports_disputes(client):
        return None
    submission = client.attestations.submission_of(lease_id, report_hash)
    return submission if submission.number != 0 else None


def _approve_bond(client: ChainClient, court: AttestationCourtClient) -> None:
    """Let the court take the bond from `client`'s account."""
    bond = client.attestations.dispute_terms().bond
    owner = client.address
    if owner is not None and bond > 0 and client.token.allowance(owner, court.address) < bond:
        client.token.approve(court.address, bond)


def _court_or_fail(client: ChainClient) -> AttestationCourtClient:
    court = _court(client)
    if court is None:
        raise ChainError("this deployment takes no disputes (it has no attestation court)")
    return court


def cache_certificates(client: ChainClient, certs: DisputeCertificates) -> list[TxResult]:
    """Have the SnpVerifier verify and cache the certificates it has not yet (the ASK or ASVK
    against the pinned ARK, then the VCEK or VLEK), one transaction each: a dispute then
    passes their hashes, and a bad signature under a cached VCEK bound to the report's chip
    proves a forgery (`isSignerBound`). Returns the transactions sent (none if cached)."""
    court = _court_or_fail(client)
    snp = SnpVerifierClient(client.w3, court.snp_verifier(), client.events, client.sender)
    signer_hash, issuer_hash = certs.hashes
    sent: list[TxResult] = []
    if certs.root is None:
        return sent
    if not snp.is_cert_verified(signer_hash):
        if not snp.is_cert_verified(issuer_hash):
            sent.append(snp.verify_certificate(certs.issuer, bytes(rsa_key_hash(certs.root))))
        sent.append(snp.verify_certificate(certs.signer, issuer_hash))
    return sent


def preview_dispute(
    client: ChainClient, lease_id: int, bundle: EvidenceBundle, certs: DisputeCertificates
) -> bool | None:
    """What the court would decide if `client`'s account disputed now (an eth_call, after
    approving the bond and caching the certificates): True reverses the verdict, False
    upholds it. A refusal (window passed, already disputed, inconclusive certificates) is a
    `ChainError` named after the contract's error."""
    court = _court_or_fail(client)
    disputer = client.address
    if disputer is None:
        raise ChainError("a dispute needs an account (its bond)")
    _approve_bond(client, court)
    cache_certificates(client, certs)
    function = court.contract.functions.dispute(
        lease_id, bundle.report_hash, bundle.report, certs.hashes, bundle.guest_key
    )
    try:
        result = function.call({"from": disputer})
    except ContractLogicError as exc:
        raise revert_error(exc, revert_decoder()) from None
    except Web3Exception as exc:
        raise ChainError(f"dispute preview failed: {exc}") from exc
    if result is False and _opens_challenge(client, court, lease_id, bundle, certs):
        return None
    return bool(result) if isinstance(result, bool) else None


# What `truth` reverts with when the disputer's inputs decide nothing: against a Verified
# verdict the dispute then opens a challenge (burden of proof on the defender).
_UNDECIDED = ("AttestationCourt_Inconclusive", "AttestationCourt_GuestKeyMismatch")


def _opens_challenge(
    client: ChainClient,
    court: AttestationCourtClient,
    lease_id: int,
    bundle: EvidenceBundle,
    certs: DisputeCertificates,
) -> bool:
    """Whether a dispute that does not overturn at once opens a challenge: the check cannot
    decide with these inputs (a VLEK, a masked CHIP_ID, no VCEK bound to the chip)."""
    submission = client.attestations.submission_of(lease_id, bundle.report_hash)
    if submission.number == 0:
        return False
    try:
        court.truth(
            lease_id,
            submission.number - 1,
            submission.signer,
            bundle.report_hash,
            bundle.report,
            certs.hashes,
            bundle.guest_key,
        )
    except ContractRevert as exc:
        return exc.name in _UNDECIDED
    return False


def challenge_of(client: ChainClient, lease_id: int, report_hash: bytes) -> Challenge | None:
    """The pending challenge of a submission's Verified verdict (None: none, or no court)."""
    court = _court(client)
    if court is None:
        return None
    challenge = court.challenge_of(lease_id, report_hash)
    return challenge if challenge.pending else None


def send_defence(
    client: ChainClient, lease_id: int, bundle: EvidenceBundle, certs: DisputeCertificates
) -> TxResult:
    """Answer a pending challenge with `bundle`'s report, guest key and `certs` (cached first):
    the verdict stands if the report checks out under them."""
    court = _court_or_fail(client)
    cache_certificates(client, certs)
    return court.defend(lease_id, bundle.report_hash, bundle.report, certs.hashes, bundle.guest_key)


def resolve_challenge(client: ChainClient, lease_id: int, report_hash: bytes) -> TxResult:
    """Settle a challenge nobody defended by its deadline: the Verified verdict is reversed."""
    return _court_or_fail(client).resolve(lease_id, report_hash)


def send_dispute(
    client: ChainClient, lease_id: int, bundle: EvidenceBundle, certs: DisputeCertificates
) -> TxResult:
    """Dispute the verdict on `bundle`'s report from `client`'s account, bond included (the
    certificates cached first, so that the dispute itself stays one transaction)."""
    court = _court_or_fail(client)
    if client.sender is None:
        raise ChainError("disputing needs an account")
    _approve_bond(client, court)
    cache_certificates(client, certs)
    return court.dispute(
        lease_id, bundle.report_hash, bundle.report, certs.hashes, bundle.guest_key
    )
