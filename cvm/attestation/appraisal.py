"""Verify then validate, in one call, with every failure as a (reason, message) pair.

This is what the verifier service, the node agent's self-check and the CLI use: it never
raises for a bad report, it returns an `Appraisal` whose `failures` say why it is bad.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from cvm.attestation.binding import GuestKey, GuestKeyError
from cvm.attestation.errors import AttestationError, Reason
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.validate import Failure, Policy, validate_report
from cvm.attestation.verify import VerifiedReport, verify_report


@dataclass(frozen=True, slots=True)
class Appraisal:
    """The verdict on one report: `verified` is set when the AMD checks passed."""

    verified: VerifiedReport | None
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return self.verified is not None and not self.failures


def appraise(
    report: bytes,
    endorsement_key: bytes,
    policy: Policy,
    *,
    chain: bytes | Sequence[x509.Certificate] | None = None,
    trusted_roots: Sequence[x509.Certificate] | None = None,
    at: datetime | None = None,
    collected_at: datetime | None = None,
) -> Appraisal:
    """`verify_report` then `validate_report`; failures are collected, never raised."""
    try:
        verified = verify_report(
            report, endorsement_key, chain=chain, trusted_roots=trusted_roots, at=at
        )
    except AttestationError as exc:
        return Appraisal(None, (Failure(exc.reason, exc.message),))
    result = validate_report(verified, policy, collected_at=collected_at, now=at)
    return Appraisal(verified, result.failures)


def appraise_evidence(
    bundle: EvidenceBundle,
    policy: Policy | None = None,
    *,
    trusted_roots: Sequence[x509.Certificate] | None = None,
    at: datetime | None = None,
    collected_at: datetime | None = None,
) -> Appraisal:
    """Appraise a bundle; REPORT_DATA must always bind to the bundle's own lease metadata."""
    policy = dataclasses.replace(policy or Policy(), binding=bundle.binding)
    return appraise(
        bundle.report,
        bundle.vcek,
        policy,
        chain=bundle.chain or None,
        trusted_roots=trusted_roots,
        at=at,
        collected_at=collected_at,
    )


def lease_policy(bundle: EvidenceBundle, *, measurement: bytes, renter: str) -> Policy:
    """What a report of `bundle`'s lease must satisfy, as the verifiers and the node (before
    it submits) check it: the lease's expected measurement, REPORT_DATA bound to the
    bundle's lease, nonce and guest key, HOST_DATA bound to the lease and its renter (read
    from the chain), no debug, VMPL 0."""
    binding = dataclasses.replace(bundle.binding, renter=renter)
    return Policy(
        measurements=(measurement,),
        binding=binding,
        host_data=binding.host_data(),
        allow_debug=False,
        vmpl=0,
    )


def appraise_lease_evidence(
    bundle: EvidenceBundle,
    *,
    measurement: bytes,
    renter: str,
    trusted_roots: Sequence[x509.Certificate] | None = None,
    at: datetime | None = None,
) -> Appraisal:
    """`appraise_evidence` under `lease_policy`, and the guest key must be a well-formed
    `GuestKey` (GUEST_KEY_MALFORMED otherwise). The checks that need more than the bundle and
    the lease's terms (the bundle names this lease, nonce and deployment; the key is not
    another live lease's) are the verifier's."""
    policy = lease_policy(bundle, measurement=measurement, renter=renter)
    appraisal = appraise_evidence(bundle, policy, trusted_roots=trusted_roots, at=at)
    try:
        GuestKey.parse(bundle.guest_key)
    except GuestKeyError as exc:
        failure = Failure(Reason.GUEST_KEY_MALFORMED, f"guest key: {exc}")
        return Appraisal(appraisal.verified, (*appraisal.failures, failure))
    return appraisal
