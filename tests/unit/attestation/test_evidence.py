"""evidence: canonical encoding, its hash, size limits, and appraisal bound to the lease."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eth_utils import keccak

from cvm.attestation import (
    EvidenceBundle,
    EvidenceError,
    LeaseBinding,
    Policy,
    Reason,
    SimulatedSecureProcessor,
    appraise,
    appraise_evidence,
    report_hash,
)

from .conftest import report_bytes, vcek_bytes

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.fixture(scope="module")
def bundle(sim_milan: SimulatedSecureProcessor) -> EvidenceBundle:
    binding = LeaseBinding(31337, REGISTRY, lease_id=9, nonce=1, guest_key=b"guest-key")
    report, vcek, chain = sim_milan.attest(report_data=binding.report_data())
    return EvidenceBundle(report, vcek, chain, 31337, REGISTRY, 9, 1, b"guest-key")


def test_report_hash_is_keccak_of_the_raw_report() -> None:
    raw = report_bytes("milan_virtee_sev")
    assert report_hash(raw) == keccak(raw)
    with pytest.raises(EvidenceError):
        report_hash(raw[:-1])


def test_canonical_round_trip(bundle: EvidenceBundle) -> None:
    encoded = bundle.encode()
    assert EvidenceBundle.decode(encoded) == bundle
    assert bundle.evidence_hash == keccak(encoded)
    obj = json.loads(encoded)
    assert list(obj) == sorted(obj)
    assert b" " not in encoded.replace(b"BEGIN CERTIFICATE", b"").replace(b"END CERTIFICATE", b"")
    assert bundle.report_hash == keccak(bundle.report)


def test_non_canonical_encodings_are_refused(bundle: EvidenceBundle) -> None:
    obj = json.loads(bundle.encode())
    pretty = json.dumps(obj, sort_keys=True, indent=1).encode()
    with pytest.raises(EvidenceError, match="canonical"):
        EvidenceBundle.decode(pretty)
    variants = [
        {**obj, "report": obj["report"].upper()},
        {**obj, "extra": 1},
        {k: v for k, v in obj.items() if k != "nonce"},
        {**obj, "format": "other"},
        {**obj, "nonce": "1"},
        {**obj, "report": "zz"},
    ]
    for bad in variants:
        with pytest.raises(EvidenceError):
            EvidenceBundle.decode(json.dumps(bad, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(EvidenceError):
        EvidenceBundle.decode(b"\xff not json")
    with pytest.raises(EvidenceError):
        EvidenceBundle.decode(b"[]")


@pytest.mark.parametrize(
    "change",
    [{"report": b"\0" * 10}, {"vcek": b""}, {"vcek": b"x" * 9000}, {"chain": b"x" * 40000},
     {"guest_key": b"k" * 2000}, {"nonce": -1}, {"lease_id": 2**256}, {"registry": "0x12"},
     {"chain_id": True}, {"chain": "é".encode()}],
)  # fmt: skip
def test_limits_and_types(bundle: EvidenceBundle, change: dict[str, object]) -> None:
    with pytest.raises(EvidenceError):
        replace(bundle, **change)  # type: ignore[arg-type]


def test_oversized_encoding_is_refused() -> None:
    with pytest.raises(EvidenceError):
        EvidenceBundle.decode(b" " * (200 * 1024))


def test_appraise_evidence_binds_the_bundle_lease(
    bundle: EvidenceBundle, sim_milan: SimulatedSecureProcessor
) -> None:
    assert appraise_evidence(bundle, trusted_roots=[sim_milan.ark]).ok
    replayed = replace(bundle, nonce=2)
    verdict = appraise_evidence(replayed, trusted_roots=[sim_milan.ark])
    assert [f.reason for f in verdict.failures] == [Reason.BINDING_MISMATCH]
    untrusted = appraise_evidence(bundle)
    assert untrusted.verified is None
    assert [f.reason for f in untrusted.failures] == [Reason.UNTRUSTED_ROOT]


def test_appraise_collects_instead_of_raising() -> None:
    verdict = appraise(report_bytes("milan_go_sev_guest"), vcek_bytes("milan_go_sev_guest"),
                       Policy())  # fmt: skip
    assert not verdict.ok and verdict.verified is not None
    assert [f.reason for f in verdict.failures] == [Reason.DEBUG_ALLOWED]
    broken = appraise(b"short", vcek_bytes("milan_go_sev_guest"), Policy())
    assert [f.reason for f in broken.failures] == [Reason.MALFORMED_REPORT]
