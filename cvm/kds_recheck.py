"""A report failing on its evidence's certificates, decided again with the chip's genuine VCEK
from AMD's KDS: for the backend verifier's votes and watcher's disputes, and for
`cvm attestation dispute` (`backend.verifier.kds.KdsVceks` is the backend's KDS client).

A verifier must not vote Rejected because of the certificates a node put in its evidence
bundle (none that parses, a VCEK of another TCB or chip, a missing or stale chain) when the
report itself is genuine: the node would then dispute on chain with the right VCEK, the EVM
would find the report genuine, and the verifiers who rejected it would be slashed. So before
such a rejection the verifier (or the CLI) asks AMD's KDS for the VCEK of the report's CHIP_ID
at its REPORTED_TCB and checks the report again with it (`recheck`). The outcome is one of:

- decided by the genuine VCEK: the report verifies with it (the vote is the check's, with
  KDS's certificate: Verified, or Rejected for the report's content), or a certificate AMD
  issued for that chip and TCB does not verify it (a forgery: Rejected);
- decided without it: KDS answered that it has no VCEK for that chip and TCB (HTTP 404) under
  any product the report may be, or the CHIP_ID is no chip's: Rejected as the bundle's own
  check said (no certificate can make the EVM find the report genuine);
- undecided, to retry: KDS did not answer (unreachable, rate limiting, a server error), or
  what it served is not a VCEK of AMD's for that product: no vote now (a verifier that does
  not vote is never slashed, see `AttestationRegistry.resolveDispute`'s voters), tried again
  on a later pass, KDS itself backed off (`KdsVceks`);
- undecided for good: no certificate can be had for the report (signed by a VLEK, or its
  CHIP_ID masked), or the chip's own VCEK is out of its dates (the EVM does not check dates:
  a rejection would be overturned): no vote. Left undecided, the attestation lapses at the
  end of the registry's verification window, which the registry counts against the node.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cvm.attestation.abi import Report, SigningKey, TcbVersion, parse
from cvm.attestation.errors import AttestationError, KdsError, KdsNotFound, Reason
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.kds import vcek_url
from cvm.attestation.product import Product
from cvm.disputes import EvidenceCheck

log = logging.getLogger(__name__)

# What a report's own failures say for sure, whatever the certificates: not a report, or
# one the chip did not sign (the EVM decides both the same way with any certificate).
CONCLUSIVE: frozenset[str] = frozenset({Reason.MALFORMED_REPORT, Reason.UNSIGNED_REPORT})
# The chip's genuine VCEK out of its dates: the EVM does not check dates.
_DATES: frozenset[str] = frozenset({Reason.CERT_EXPIRED, Reason.CERT_NOT_YET_VALID})
# A VCEK of AMD's for the product, chained to a trusted root, that does not verify the
# report: the chip did not sign it (KDS serves one VCEK per chip and TCB).
_NOT_SIGNED_BY_CHIP: frozenset[str] = frozenset(
    {Reason.SIGNATURE_INVALID, Reason.TCB_MISMATCH, Reason.CHIP_ID_MISMATCH}
)


def needs_kds(check: EvidenceCheck) -> bool:
    """Whether `check` failed on the bundle's certificates rather than on the report: the AMD
    checks did not pass, for a reason other than the report being malformed or unsigned."""
    appraisal = check.appraisal
    if appraisal.verified is not None or not appraisal.failures:
        return False
    return str(appraisal.failures[0].reason) not in CONCLUSIVE


VcekLookup = Callable[[Report, Product], bytes]


@dataclass(frozen=True)
class Recheck:
    """What the KDS made of a check that failed on the bundle's certificates."""

    check: EvidenceCheck  # the check the verdict rests on (KDS's VCEK's when `from_kds`)
    from_kds: bool  # the check ran with the VCEK the KDS served
    undecided: str | None = None  # why no verdict may be voted (None: `check` decides)
    retry: bool = False  # undecided for now only: ask again later
    note: str | None = None  # what the KDS said, for the stored result


def recheck(
    bundle: EvidenceBundle,
    check: EvidenceCheck,
    run: Callable[[EvidenceBundle], EvidenceCheck],
    kds: VcekLookup | None,
    intermediates: Sequence[x509.Certificate] = (),
) -> Recheck:
    """`check` (of `bundle`, failed on its certificates: `needs_kds`) decided again with the
    chip's genuine VCEK: `run` checks a bundle as the verifier does; the KDS's VCEK is
    checked with `intermediates` (besides AMD's own) as its chain, never the bundle's."""
    report = parse(bundle.report)  # parses: the check did not fail as MALFORMED_REPORT
    if report.signing_key is not SigningKey.VCEK:
        return Recheck(
            check,
            False,
            f"the report is signed by a {report.signing_key.name}, which AMD's KDS does not"
            " serve, and the evidence's certificate does not verify it",
        )
    if not any(report.chip_id):
        return Recheck(
            check,
            False,
            "the report's CHIP_ID is masked: its VCEK cannot be fetched, and the evidence's"
            " certificate does not verify it",
        )
    if kds is None:
        return Recheck(
            check, False, "the evidence's certificates do not verify the report and no KDS is set"
        )
    products = [report.cpuid_product] if report.cpuid_product is not None else list(Product)
    located = [p for p in products if _locatable(report, p)]
    chain = b"".join(cert.public_bytes(Encoding.PEM) for cert in intermediates)
    missing: list[str] = []
    for product in located:
        where = _describe(report, product)
        try:
            der = kds(report, product)
        except KdsNotFound:
            missing.append(where)
            continue
        except KdsError as exc:
            return Recheck(check, False, f"AMD's KDS is unavailable: {exc.message}", retry=True)
        try:
            genuine = run(dataclasses.replace(bundle, vcek=der, chain=chain))
        except AttestationError as exc:  # e.g. a certificate too large for a bundle
            return Recheck(
                check, False, f"the KDS's answer for {where} is unusable: {exc.message}", retry=True
            )
        appraisal = genuine.appraisal
        if appraisal.verified is not None:
            return Recheck(
                genuine, True, note=f"verified with the VCEK AMD's KDS serves for {where}"
            )
        failure = appraisal.failures[0]
        if failure.reason in _DATES:
            return Recheck(
                check,
                False,
                f"the VCEK AMD's KDS serves for {where} is out of its dates ({failure.message}):"
                " the on-chain check does not look at dates",
            )
        if failure.reason in _NOT_SIGNED_BY_CHIP:
            return Recheck(
                genuine,
                True,
                note=f"the VCEK AMD's KDS serves for {where} does not verify the report:"
                f" {failure.message}",
            )
        # Not a VCEK of AMD's for that product under this verifier's roots: a broken answer
        # (or configuration), not the node's doing.
        log.warning("KDS answer for %s does not verify as AMD's VCEK: %s", where, failure.message)
        return Recheck(
            check,
            False,
            f"what AMD's KDS serves for {where} is not a VCEK of AMD's: {failure.message}",
            retry=True,
        )
    note = (
        f"AMD's KDS has no VCEK for {' or '.join(missing)}"
        if missing
        else f"CHIP_ID {report.chip_id.hex()} is no chip's of {', '.join(map(str, products))}"
    )
    return Recheck(check, False, note=note)


def _locatable(report: Report, product: Product) -> bool:
    try:
        vcek_url(report, product)
    except KdsError:
        return False
    return True


def _describe(report: Report, product: Product) -> str:
    hwid = report.chip_id[: product.hwid_size].hex()
    tcb = TcbVersion.from_int(report.reported_tcb, product)
    return f"{product} chip {hwid[:16]}.. at TCB {tcb.components()}"
