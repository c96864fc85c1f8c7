"""The renter's release check (cvm.attestation.release) on simulated reports: only a report
of the expected measurement, bound to this lease, nonce and guest key, with HOST_DATA for this
lease and renter, chaining to a trusted root, yields a key to seal to; only that guest's key
opens what is sealed, and only the renter can sign it."""

from __future__ import annotations

import pytest
from eth_account import Account

from cvm import guest_eip712
from cvm.attestation.binding import build_report_data, host_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import ReleaseRefused, seal, verify_guest
from cvm.attestation.sim import SimulatedSecureProcessor
from guest.agent import GuestKeys

CHAIN_ID, REGISTRY, LEASE, NONCE = 31337, "0x" + "12" * 20, 5, 3
RENTER = Account.create()
MEASUREMENT = bytes(range(48))


@pytest.fixture(scope="module")
def chip() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


@pytest.fixture(scope="module")
def keys() -> GuestKeys:
    return GuestKeys()


def bundle(
    chip, guest_key: bytes, *, measurement: bytes = MEASUREMENT, bound_key=None, launched=None
):
    data = build_report_data(CHAIN_ID, REGISTRY, LEASE, NONCE, bound_key or guest_key)
    launched = launched or host_data(CHAIN_ID, REGISTRY, LEASE, RENTER.address)
    signed = chip.attest(measurement=measurement, report_data=data, host_data=launched)
    return EvidenceBundle(
        report=signed.report, vcek=signed.vcek_der, chain=signed.chain_pem, chain_id=CHAIN_ID,
        registry=REGISTRY, lease_id=LEASE, nonce=NONCE, guest_key=guest_key,
    )  # fmt: skip


def check(evidence, chip, **overrides):
    args = {"chain_id": CHAIN_ID, "registry": REGISTRY, "lease_id": LEASE, "nonce": NONCE,
            "renter": RENTER.address, "expected_measurement": MEASUREMENT,
            "trusted_roots": [chip.ark]}  # fmt: skip
    return verify_guest(evidence, **(args | overrides))


def test_a_bound_report_yields_the_guest_and_only_it_opens_the_seal(chip, keys):
    guest = check(bundle(chip, keys.public), chip)
    assert guest.guest_key == keys.public
    assert guest.signer.lower() == "0x" + keys.signer.address.hex()
    sealed = seal(guest, RENTER, seq=1, ssh_keys=["ssh-ed25519 AAAA renter"],
                  secrets={"a": b"secret"})  # fmt: skip
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


@pytest.mark.parametrize(
    "key", [b"", bytes(32), bytes(64), bytes(84), b"\x01" * 85, bytes(116), b"\x01" * 117]
)
def test_a_report_without_a_well_formed_guest_key_gets_nothing(chip, key):
    with pytest.raises(ReleaseRefused, match="guest agent's key"):
        check(bundle(chip, key), chip)


@pytest.mark.parametrize(
    "launched",
    [host_data(CHAIN_ID, REGISTRY, LEASE + 1, RENTER.address),
     host_data(CHAIN_ID, REGISTRY, LEASE, Account.create().address),
     host_data(1, REGISTRY, LEASE, RENTER.address), bytes(32)],
    ids=["another-lease", "another-renter", "another-chain", "zero"],
)  # fmt: skip
def test_a_guest_launched_for_another_lease_or_renter_is_refused(chip, keys, launched):
    """One guest, many leases: before issue 17 renter B's client accepted a genuine report
    of lease A's guest (same image, B's REPORT_DATA) and sealed B's secrets into A's VM.
    HOST_DATA, set at launch and read here against the chain's lease and renter, stops it."""
    with pytest.raises(ReleaseRefused, match="HOST_DATA"):
        check(bundle(chip, keys.public, launched=launched), chip)


def test_only_the_lease_renter_can_seal_and_the_signature_is_eip712(chip, keys):
    guest = check(bundle(chip, keys.public), chip)
    with pytest.raises(ValueError, match="only the lease's renter"):
        seal(guest, Account.create(), seq=1, secrets={"a": b"x"})
    for seq in (0, -1, 2**64, True):
        with pytest.raises(ValueError, match="seq"):
            seal(guest, RENTER, seq=seq, secrets={"a": b"x"})
    sealed = seal(guest, RENTER, seq=7, secrets={"a": b"x"})
    message = guest_eip712.sealed_secrets_message(
        CHAIN_ID, REGISTRY, LEASE, 7, sealed.report_data, sealed.enc, sealed.ciphertext
    )
    assert guest_eip712.recover(message, sealed.signature) == RENTER.address
    assert sealed.to_json_dict()["seq"] == 7


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "x" * 65])
def test_bad_secret_names_are_refused_before_sealing(chip, keys, name):
    guest = check(bundle(chip, keys.public), chip)
    with pytest.raises(ValueError, match="secret name"):
        seal(guest, RENTER, seq=1, secrets={name: b"1"})
