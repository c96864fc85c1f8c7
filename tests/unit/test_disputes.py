"""`cvm.disputes`: what the EVM will decide for a verdict we re-checked, and the certificates
a dispute carries (the evidence's own, or the chip's genuine VCEK against a forgery)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from cvm.attestation import EvidenceBundle, SimulatedSecureProcessor
from cvm.attestation.sim import SimulatedAmd
from cvm.disputes import (
    Action,
    DisputeEvidenceError,
    assess,
    dispute_certificates,
)

REGISTRY = "0x" + "33" * 20


@pytest.fixture(scope="module")
def honest() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan", amd=SimulatedAmd(rsa_key_size=2048))


@pytest.fixture(scope="module")
def forger(honest: SimulatedSecureProcessor) -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor(
        "Milan", amd=SimulatedAmd(rsa_key_size=2048), chip_id=honest.hwid
    )


def _bundle(sp: SimulatedSecureProcessor) -> EvidenceBundle:
    signed = sp.attest(measurement=b"\x01" * 48)
    return EvidenceBundle(signed.report, signed.vcek_der, signed.chain_pem, 1, REGISTRY, 1, 0, b"")


@pytest.mark.parametrize(
    ("verdict", "ok", "reasons", "action", "overturns"),
    [
        ("verified", True, [], Action.AGREE, None),
        ("rejected", False, ["MEASUREMENT_MISMATCH"], Action.AGREE, None),
        ("rejected", True, [], Action.DISPUTE, True),
        ("verified", False, ["SIGNATURE_INVALID"], Action.DISPUTE, True),
        ("verified", False, ["UNTRUSTED_ROOT"], Action.DISPUTE, True),
        ("verified", False, ["HOST_DATA_MISMATCH", "GUEST_KEY_REUSED"], Action.DISPUTE, True),
        ("verified", False, ["GUEST_KEY_REUSED"], Action.NOT_DISPUTABLE, False),
        ("verified", False, ["CERT_EXPIRED"], Action.NOT_DISPUTABLE, False),
        ("verified", False, ["NO_EVIDENCE"], Action.NOT_DISPUTABLE, False),
    ],
)
def test_what_the_chain_will_decide(
    verdict: str, ok: bool, reasons: list[str], action: Action, overturns: bool | None
) -> None:
    assessment = assess(verdict, ok, reasons)
    assert assessment.action is action
    assert assessment.chain_overturns is overturns
    assert assessment.explanation


def test_the_evidence_s_own_certificates_when_they_chain_to_a_trusted_root(
    honest: SimulatedSecureProcessor,
) -> None:
    bundle = _bundle(honest)
    certs = dispute_certificates(bundle, trusted_roots=[honest.ark])
    assert (certs.signer, certs.issuer) == (honest.vcek_der, honest.ask.public_bytes(Encoding.DER))
    assert certs.root == honest.ark


def test_a_forgery_is_disputed_with_the_chip_s_genuine_vcek(
    honest: SimulatedSecureProcessor, forger: SimulatedSecureProcessor
) -> None:
    """The forged evidence names the honest chip but carries the forger's VCEK and chain: the
    chip's genuine VCEK (from AMD's KDS in production) proves the signature false."""
    bundle = _bundle(forger)
    asked = []

    def kds(report: object, product: object) -> bytes:
        asked.append(product)
        return honest.vcek_der

    certs = dispute_certificates(
        bundle, trusted_roots=[honest.ark], intermediates=[honest.ask], vcek_source=kds
    )
    assert (certs.signer, certs.issuer) == (honest.vcek_der, honest.ask.public_bytes(Encoding.DER))
    assert certs.root == honest.ark
    assert [str(p) for p in asked] == ["Milan"]


def test_a_forgery_without_a_source_of_genuine_vceks_cannot_be_disputed(
    honest: SimulatedSecureProcessor, forger: SimulatedSecureProcessor
) -> None:
    with pytest.raises(DisputeEvidenceError, match="genuine VCEK"):
        dispute_certificates(_bundle(forger), trusted_roots=[honest.ark])
    with pytest.raises(DisputeEvidenceError, match="unavailable"):
        dispute_certificates(
            _bundle(forger),
            trusted_roots=[honest.ark],
            intermediates=[honest.ask],
            vcek_source=lambda _r, _p: forger.vcek_der,  # not signed by a trusted ASK
        )


def test_certificates_that_do_not_parse_are_a_clear_error(honest: SimulatedSecureProcessor) -> None:
    signed = honest.attest()
    bundle = EvidenceBundle(
        signed.report, b"\x30\x03junk", signed.chain_pem, 1, REGISTRY, 1, 0, b""
    )
    with pytest.raises(DisputeEvidenceError, match="does not parse"):
        dispute_certificates(bundle, trusted_roots=[honest.ark])


def test_certificates_that_do_not_parse_give_way_to_the_chips_vcek(
    honest: SimulatedSecureProcessor,
) -> None:
    """A genuine report uploaded with a garbage VCEK and chain: the dispute (of a wrong
    rejection) carries the chip's VCEK from KDS. FAILED on the old code (refused at once)."""
    signed = honest.attest()
    bundle = EvidenceBundle(signed.report, b"\x30\x03junk", b"junk", 1, REGISTRY, 1, 0, b"")
    certs = dispute_certificates(
        bundle,
        trusted_roots=[honest.ark],
        intermediates=[honest.ask],
        vcek_source=lambda _r, _p: honest.vcek_der,
    )
    assert certs.signer == honest.vcek_der and certs.root is not None
