"""`cvm.disputes`: what the EVM will decide for a verdict we re-checked, and the certificates
a dispute carries (the evidence's own, or the chip's genuine VCEK against a forgery)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from cvm.attestation import EvidenceBundle, SimulatedSecureProcessor
from cvm.attestation.sim import SimulatedAmd
from cvm.disputes import (
    CHAIN_DECIDABLE,
    Action,
    DisputeEvidenceError,
    EvidenceCheck,
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


# --- `check_evidence`: the verifiers' check, deciding as `AttestationCourt.truth` -----------

MEASUREMENT = b"\x01" * 48
RENTER = "0x" + "44" * 20
SIGNER = "0x" + "55" * 20


def _key(signer: str = SIGNER, hpke: bytes = b"\x07" * 32) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import PublicFormat

    ssh = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = ssh.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hpke + raw + bytes.fromhex(signer[2:]) + b"\x09" * 32


def _lease_report(
    sp: SimulatedSecureProcessor,
    key: bytes,
    *,
    lease_id: int = 1,
    measurement: bytes = MEASUREMENT,
    key_hash: bytes | None = None,
) -> EvidenceBundle:
    """A genuine report of `lease_id` (nonce 0, chain 1) binding `key` (or `key_hash`)."""
    from cvm.attestation.binding import guest_key_digest, host_data, lease_digest

    data = lease_digest(1, REGISTRY, lease_id, 0) + (
        guest_key_digest(key) if key_hash is None else key_hash
    )
    signed = sp.attest(
        measurement=measurement,
        report_data=data,
        host_data=host_data(1, REGISTRY, lease_id, RENTER),
    )
    return EvidenceBundle(
        signed.report, signed.vcek_der, signed.chain_pem, 1, REGISTRY, lease_id, 0, key
    )


def _check(
    sp: SimulatedSecureProcessor, bundle: EvidenceBundle, signer: str | None = SIGNER
) -> EvidenceCheck:
    from cvm.disputes import check_evidence

    return check_evidence(
        bundle,
        chain_id=1,
        registry=REGISTRY,
        lease_id=1,
        nonce=0,
        renter=RENTER,
        measurement=MEASUREMENT,
        submitted_signer=signer,
        trusted_roots=[sp.ark],
    )


def test_the_bundles_own_lease_metadata_counts_for_nothing(
    honest: SimulatedSecureProcessor,
) -> None:
    """A genuine report of lease 1 uploaded as lease 9, nonce 4, another chain and registry:
    checked as the chain's submission, it passes (the EVM would find it genuine)."""
    from dataclasses import replace

    bundle = replace(
        _lease_report(honest, _key()), lease_id=9, nonce=4, chain_id=5, registry="0x" + "66" * 20
    )
    check = _check(honest, bundle)
    assert check.ok and check.reasons == () and check.undecided is None
    assert any("lease id 9" in m for m in check.messages)


def test_a_guest_key_the_report_does_not_bind_decides_nothing_alone(
    honest: SimulatedSecureProcessor,
) -> None:
    from dataclasses import replace

    genuine = _lease_report(honest, _key())
    check = _check(honest, replace(genuine, guest_key=_key()))
    assert not check.ok and check.reasons == ("GUEST_KEY_UNKNOWN",)
    assert check.undecided is not None
    # With a failure the EVM sees without the key, it decides: no key makes it genuine.
    foreign = replace(_lease_report(honest, _key(), lease_id=2), lease_id=1, guest_key=_key())
    check = _check(honest, foreign)
    assert check.undecided is None and not check.ok
    assert set(check.reasons) == {"BINDING_MISMATCH", "HOST_DATA_MISMATCH", "GUEST_KEY_UNKNOWN"}
    assert set(check.reasons) & CHAIN_DECIDABLE
    measured = _lease_report(honest, _key(), measurement=b"\x02" * 48)
    check = _check(honest, replace(measured, guest_key=_key()))
    assert check.undecided is None and "MEASUREMENT_MISMATCH" in check.reasons


def test_the_bound_guest_key_decides_as_on_chain(honest: SimulatedSecureProcessor) -> None:
    # REPORT_DATA binds no key: no dispute can prove it genuine.
    check = _check(honest, _lease_report(honest, b"", key_hash=bytes(32)))
    assert check.reasons == ("GUEST_KEY_MALFORMED",) and check.undecided is None
    # A bound key that is not 116 bytes: the EVM takes none.
    check = _check(honest, _lease_report(honest, b"\x01" * 40))
    assert check.reasons == ("GUEST_KEY_MALFORMED",) and check.undecided is None
    # 116 bytes with the submitted signer but a zero X25519 key: genuine on chain.
    check = _check(honest, _lease_report(honest, _key(hpke=bytes(32))))
    assert check.reasons == ("GUEST_KEY_UNUSABLE",) and check.undecided is not None
    # Another signer than the submitted one: false on chain.
    check = _check(honest, _lease_report(honest, _key(signer="0x" + "77" * 20)))
    assert check.reasons == ("GUEST_SIGNER_MISMATCH",) and check.undecided is None
    # The submitted signer not known here (not indexed): undecided, never a mismatch.
    check = _check(honest, _lease_report(honest, _key()), signer=None)
    assert check.reasons == ("SIGNER_UNKNOWN",) and check.undecided is not None


def test_a_forged_report_is_still_decided(
    honest: SimulatedSecureProcessor, forger: SimulatedSecureProcessor
) -> None:
    """The forger's report fails on its certificates (KDS's to decide), never undecided here."""
    check = _check(honest, _lease_report(forger, _key()))
    assert not check.ok and check.undecided is None
    assert check.appraisal.verified is None
