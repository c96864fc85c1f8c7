"""Secret release by the renter's own client: verify the guest, then seal to its key.

Before anything leaves the renter's machine, the evidence must show (1) a report signed by
a chip that chains to the pinned AMD root (or to the simulated root, only when the caller
trusts it explicitly for a local stack), (2) the measurement of the image the renter chose,
(3) REPORT_DATA bound to this lease, this attestation nonce on this deployment and to the
guest key the bundle carries. Secrets are then sealed to that key with HPKE (RFC 9180,
DHKEM(X25519), HKDF-SHA256, ChaCha20-Poly1305; pyhpke), with the report's REPORT_DATA as
associated data, so the backend and the node, which carry the ciphertext, never read it,
and only the guest that made that report can open it.

The guest key (guest/agent.py) is 64 bytes: X25519 public key (HPKE) then Ed25519 public
key (the guest's SSH host key), so an attested report also pins the SSH server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.appraisal import appraise_evidence
from cvm.attestation.errors import AttestationError, Reason
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.validate import Policy

GUEST_KEY_SIZE = 64
HPKE_INFO = b"cvm.secrets.v1"
MAX_SECRET_BYTES = 256 * 1024
SECRET_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


class ReleaseRefused(AttestationError):
    """The evidence does not show the guest the renter asked for: nothing is released."""

    reason = Reason.BINDING_MISMATCH


@dataclass(frozen=True, slots=True)
class GuestIdentity:
    """The attested guest: its keys and the REPORT_DATA of the report that proved them."""

    hpke_public: bytes  # X25519, 32 bytes
    ssh_public: bytes  # Ed25519, 32 bytes
    report_data: bytes  # 64 bytes
    measurement: bytes  # 48 bytes
    # The root the report chained to: SIMULATED only when the caller trusted the simulated
    # AMD-SP (a local stack); every place that shows the guest says so.
    amd_root: AmdRoot = AmdRoot.AMD

    @classmethod
    def from_guest_key(
        cls,
        guest_key: bytes,
        report_data: bytes,
        measurement: bytes,
        amd_root: AmdRoot = AmdRoot.AMD,
    ) -> GuestIdentity:
        if len(guest_key) != GUEST_KEY_SIZE:
            raise ReleaseRefused(
                f"the evidence carries a {len(guest_key)}-byte guest key, not a cvm guest "
                f"agent's {GUEST_KEY_SIZE}: nothing can be sealed to it"
            )
        return cls(guest_key[:32], guest_key[32:], report_data, measurement, amd_root)

    def ssh_host_key(self) -> str:
        """The guest's SSH host key as an OpenSSH public key line (`ssh-ed25519 AAAA...`)."""
        key = ed25519.Ed25519PublicKey.from_public_bytes(self.ssh_public)
        return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()

    def known_hosts_line(self, host: str, port: int) -> str:
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.ssh_host_key()}\n"


def verify_guest(
    bundle: EvidenceBundle,
    *,
    chain_id: int,
    registry: str,
    lease_id: int,
    nonce: int,
    expected_measurement: bytes,
    trusted_roots: Sequence[x509.Certificate] | None = None,
) -> GuestIdentity:
    """The attested guest of `bundle`, or ReleaseRefused saying what does not hold.

    `chain_id`, `registry`, `lease_id` and `nonce` are what the renter read from the chain,
    not from the bundle; `trusted_roots` None means AMD's own roots only."""
    claimed = (bundle.chain_id, bundle.registry.lower(), bundle.lease_id, bundle.nonce)
    wanted = (chain_id, registry.lower(), lease_id, nonce)
    if claimed != wanted:
        raise ReleaseRefused(
            f"the evidence is for (chain, registry, lease, nonce) {claimed}, not {wanted}"
        )
    if len(expected_measurement) != 48 or not any(expected_measurement):
        raise ReleaseRefused("an expected measurement (48 bytes, not all zero) is required")
    appraisal = appraise_evidence(
        bundle, Policy(measurements=[expected_measurement]), trusted_roots=trusted_roots
    )
    if not appraisal.ok:
        reasons = "; ".join(failure.message for failure in appraisal.failures)
        raise ReleaseRefused(f"the guest's report does not hold: {reasons}")
    assert appraisal.verified is not None  # ok implies verified
    report = appraisal.verified.report
    # appraise_evidence bound REPORT_DATA to the bundle's guest key; a key-less report has
    # zeros there and cannot receive anything.
    return GuestIdentity.from_guest_key(
        bundle.guest_key, report.report_data, report.measurement, appraisal.verified.amd_root
    )


@dataclass(frozen=True, slots=True)
class SealedSecrets:
    """What travels through the backend and the node: only ciphertext."""

    report_data: bytes
    enc: bytes
    ciphertext: bytes

    def to_json_dict(self) -> dict[str, str]:
        return {
            "report_data": self.report_data.hex(),
            "enc": self.enc.hex(),
            "ciphertext": self.ciphertext.hex(),
        }


def seal(
    guest: GuestIdentity, *, ssh_keys: Sequence[str] = (), secrets: Mapping[str, bytes] = {}
) -> SealedSecrets:
    """SSH public keys and named secrets, sealed to the attested guest's HPKE key."""
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId

    for name, value in secrets.items():
        if not name or len(name) > 64 or name[0] in ".-" or not set(name) <= SECRET_NAME_CHARS:
            raise ValueError(
                f"secret name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - (no leading . -)"
            )
        if len(value) > MAX_SECRET_BYTES:
            raise ValueError(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
    for key in ssh_keys:
        if "\n" in key.strip() or not key.strip().startswith(("ssh-", "ecdsa-", "sk-")):
            raise ValueError("an SSH key must be one OpenSSH public key line")
    payload = json.dumps(
        {
            "ssh_keys": [key.strip() for key in ssh_keys],
            "secrets": {name: base64.b64encode(v).decode() for name, v in secrets.items()},
        }
    ).encode()
    suite = CipherSuite.new(
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
    )
    recipient = suite.kem.deserialize_public_key(guest.hpke_public)
    enc, context = suite.create_sender_context(recipient, info=HPKE_INFO)
    ciphertext = context.seal(payload, aad=guest.report_data)
    return SealedSecrets(guest.report_data, bytes(enc), bytes(ciphertext))
