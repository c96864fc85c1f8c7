"""The renter's release check (cvm.attestation.release) on simulated reports: only a report
of the expected measurement, bound to this lease, nonce and guest key, chaining to a trusted
root, yields a key to seal to; and only that guest's key opens what is sealed."""

from __future__ import annotations

import pytest

from cvm.attestation.binding import build_report_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import ReleaseRefused, seal, verify_guest
from cvm.attestation.sim import SimulatedSecureProcessor
from guest.agent import GuestKeys

CHAIN_ID, REGISTRY, LEASE, NONCE = 31337, "0x" + "12" * 20, 5, 3
MEASUREMENT = bytes(range(48))


@pytest.fixture(scope="module")
def chip() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


@pytest.fixture(scope="module")
def keys() -> GuestKeys:
    return GuestKeys()


def bundle(chip, guest_key: bytes, *, measurement: bytes = MEASUREMENT, bound_key=None):
    data = build_report_data(CHAIN_ID, REGISTRY, LEASE, NONCE, bound_key or guest_key)
    signed = chip.attest(measurement=measurement, report_data=data)
    return EvidenceBundle(
        report=signed.report, vcek=signed.vcek_der, chain=signed.chain_pem, chain_id=CHAIN_ID,
        registry=REGISTRY, lease_id=LEASE, nonce=NONCE, guest_key=guest_key,
    )  # fmt: skip


def check(evidence, chip, **overrides):
    args = {"chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": LEASE, "nonce": NONCE,
            "expected_measurement": MEASUREMENT, "trusted_roots": [chip.ark]}  # fmt: skip
    return verify_guest(evidence, **(args | overrides))


def test_a_bound_report_yields_the_guest_and_only_it_opens_the_seal(chip, keys):
    guest = check(bundle(chip, keys.public), chip)
    assert guest.hpke_public + guest.ssh_public == keys.public
    sealed = seal(guest, ssh_keys=["ssh-ed25519 AAAA renter"], secrets={"a": b"secret"})
    opened = keys.open_sealed(sealed.enc, sealed.ciphertext, sealed.report_data)
    assert b"secret" not in sealed.ciphertext and b'"ssh_keys"' in opened
    with pytest.raises(Exception):  # noqa: B017 - pyhpke's own error type
        GuestKeys().open_sealed(sealed.enc, sealed.ciphertext, sealed.report_data)
    assert guest.ssh_host_key().startswith("ssh-ed25519 ")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"trusted_roots": None}, "root"),  # the simulated root is not AMD's
        ({"expected_measurement": bytes(48)}, "not all zero"),
        ({"expected_measurement": b"\x01" * 48}, "MEASUREMENT"),
        ({"lease_id": LEASE + 1}, "not"),
        ({"nonce": NONCE + 1}, "not"),
        ({"registry": "0x" + "13" * 20}, "not"),
    ],
)
def test_anything_else_is_refused(chip, keys, overrides, match):
    with pytest.raises(ReleaseRefused, match=match):
        check(bundle(chip, keys.public), chip, **overrides)


def test_a_report_replayed_with_another_key_is_refused(chip, keys):
    replayed = bundle(chip, GuestKeys().public, bound_key=keys.public)
    with pytest.raises(ReleaseRefused, match="REPORT_DATA"):
        check(replayed, chip)


def test_a_report_without_a_guest_key_gets_nothing(chip):
    with pytest.raises(ReleaseRefused, match="guest key"):
        check(bundle(chip, b""), chip)


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "x" * 65])
def test_bad_secret_names_are_refused_before_sealing(chip, keys, name):
    guest = check(bundle(chip, keys.public), chip)
    with pytest.raises(ValueError, match="secret name"):
        seal(guest, secrets={name: b"1"})
