"""Secret release by the renter's own client: verify the guest, then seal to its key.

Before anything leaves the renter's machine, the evidence must show (1) a report signed by
a chip that chains to the pinned AMD root (or to the simulated root, only when the caller
trusts it explicitly for a local stack), (2) the measurement of the image the renter chose,
(3) REPORT_DATA bound to this lease, this attestation nonce on this deployment and to the
guest key the bundle carries, (4) HOST_DATA binding this lease and this renter (as read from
the chain), so a guest launched for another lease or renter is refused, and (5) a well-formed
guest key (cvm.attestation.binding.GuestKey). Secrets are then sealed to that key with HPKE
(RFC 9180, DHKEM(X25519), HKDF-SHA256, ChaCha20-Poly1305; pyhpke), with the report's
REPORT_DATA as associated data, so the backend and the node, which carry the ciphertext,
never read it, and only the guest that made that report can open it.

HPKE base mode authenticates nobody: anyone can seal to the guest's public key. So every
sealed message is also signed by the renter (EIP-712 `SealedSecrets`, cvm.guest_eip712) with
a sequence number; the guest installs it only with the signature of the renter its HOST_DATA
binds and a sequence number above the last one it installed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cvm import guest_eip712
from cvm.attestation.amd_root import AmdRoot
from cvm.attestation.appraisal import appraise_evidence
from cvm.attestation.binding import GuestKey, GuestKeyError, host_data
from cvm.attestation.errors import AttestationError, Reason
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.validate import Policy

HPKE_INFO = b"cvm.secrets.v1"
MAX_SECRET_BYTES = 256 * 1024
SECRET_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


class ReleaseRefused(AttestationError):
    """The evidence does not show the guest the renter asked for: nothing is released."""

    reason = Reason.BINDING_MISMATCH


@dataclass(frozen=True, slots=True)
class GuestIdentity:
    """The attested guest: its keys, the REPORT_DATA of the report that proved them, and the
    lease (deployment, id, renter) its HOST_DATA binds."""

    hpke_public: bytes  # X25519, 32 bytes
    ssh_public: bytes  # Ed25519, 32 bytes
    signer: str  # checksummed address of the guest's attested signer (secp256k1)
    tls_spki_sha256: bytes  # SHA-256 of its TLS key's DER SubjectPublicKeyInfo, 32 bytes
    report_data: bytes  # 64 bytes
    measurement: bytes  # 48 bytes
    chain_id: int
    registry: str
    lease_id: int
    renter: str
    # The root the report chained to: SIMULATED only when the caller trusted the simulated
    # AMD-SP (a local stack); every place that shows the guest says so.
    amd_root: AmdRoot = AmdRoot.AMD

    @classmethod
    def from_guest_key(
        cls,
        guest_key: bytes,
        report_data: bytes,
        measurement: bytes,
        *,
        chain_id: int,
        registry: str,
        lease_id: int,
        renter: str,
        amd_root: AmdRoot = AmdRoot.AMD,
    ) -> GuestIdentity:
        key = _require_guest_key(guest_key)
        return cls(key.hpke_public, key.ssh_public, key.signer, key.tls_spki_sha256,
                   report_data, measurement, chain_id, registry, lease_id, renter,
                   amd_root)  # fmt: skip

    @property
    def guest_key(self) -> bytes:
        return GuestKey(
            self.hpke_public, self.ssh_public, self.signer, self.tls_spki_sha256
        ).to_bytes()

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
    renter: str,
    expected_measurement: bytes,
    trusted_roots: Sequence[x509.Certificate] | None = None,
) -> GuestIdentity:
    """The attested guest of `bundle`, or ReleaseRefused saying what does not hold.

    `chain_id`, `registry`, `lease_id`, `nonce` and `renter` are what the renter read from
    the chain, not from the bundle; `trusted_roots` None means AMD's own roots only."""
    claimed = (bundle.chain_id, bundle.registry.lower(), bundle.lease_id, bundle.nonce)
    wanted = (chain_id, registry.lower(), lease_id, nonce)
    if claimed != wanted:
        raise ReleaseRefused(
            f"the evidence is for (chain, registry, lease, nonce) {claimed}, not {wanted}"
        )
    if len(expected_measurement) != 48 or not any(expected_measurement):
        raise ReleaseRefused("an expected measurement (48 bytes, not all zero) is required")
    # Before the report is even looked at: a key that is not a guest agent's gets nothing.
    _require_guest_key(bundle.guest_key)
    policy = Policy(
        measurements=[expected_measurement],
        host_data=host_data(chain_id, registry, lease_id, renter),
    )
    appraisal = appraise_evidence(bundle, policy, trusted_roots=trusted_roots)
    if not appraisal.ok:
        reasons = "; ".join(failure.message for failure in appraisal.failures)
        raise ReleaseRefused(f"the guest's report does not hold: {reasons}")
    assert appraisal.verified is not None  # ok implies verified
    report = appraisal.verified.report
    # appraise_evidence bound REPORT_DATA to the bundle's guest key and HOST_DATA to this
    # lease and renter; a key-less report has zeros there and cannot receive anything.
    return GuestIdentity.from_guest_key(
        bundle.guest_key, report.report_data, report.measurement, chain_id=chain_id,
        registry=registry, lease_id=lease_id, renter=renter,
        amd_root=appraisal.verified.amd_root,
    )  # fmt: skip


def _require_guest_key(guest_key: bytes) -> GuestKey:
    try:
        return GuestKey.parse(guest_key)
    except GuestKeyError as exc:
        raise ReleaseRefused(
            f"the evidence does not carry a cvm guest agent's key ({exc}): nothing can be"
            " sealed to it"
        ) from None


@dataclass(frozen=True, slots=True)
class SealedSecrets:
    """What travels through the backend and the node: ciphertext, and the renter's signature
    over it with its sequence number (EIP-712 SealedSecrets)."""

    report_data: bytes
    enc: bytes
    ciphertext: bytes
    seq: int
    signature: bytes  # 65 bytes, r || s || v

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "report_data": self.report_data.hex(),
            "enc": self.enc.hex(),
            "ciphertext": self.ciphertext.hex(),
            "seq": self.seq,
            "signature": self.signature.hex(),
        }


def seal(
    guest: GuestIdentity,
    renter: Any,
    *,
    seq: int,
    ssh_keys: Sequence[str] = (),
    secrets: Mapping[str, bytes] = {},
) -> SealedSecrets:
    """SSH public keys and named secrets, sealed to the attested guest's HPKE key and signed
    by `renter` (an eth_account LocalAccount: the lease's renter, as HOST_DATA binds it)."""
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId

    if renter.address.lower() != guest.renter.lower():
        raise ValueError(
            f"only the lease's renter {guest.renter} can send it secrets, not {renter.address}"
        )
    top = guest_eip712.MAX_SEALED_SEQ
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= top:
        raise ValueError(f"seq must be 1 to {top}, got {seq!r}")
    for name, value in secrets.items():
        if not name or len(name) > 64 or name[0] in ".-" or not set(name) <= SECRET_NAME_CHARS:
            raise ValueError(
                f"secret name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - (no leading . -)"
            )
        if len(value) > MAX_SECRET_BYTES:
            raise ValueError(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
    for key in ssh_keys:
        if (
            "\n" in key.strip()
            or "\r" in key
            or not key.strip().startswith(("ssh-", "ecdsa-", "sk-"))
        ):
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
    ciphertext = bytes(context.seal(payload, aad=guest.report_data))
    message = guest_eip712.sealed_secrets_message(
        guest.chain_id, guest.registry, guest.lease_id, seq, guest.report_data, bytes(enc),
        ciphertext,
    )  # fmt: skip
    signature = guest_eip712.sign(message, renter)
    return SealedSecrets(guest.report_data, bytes(enc), ciphertext, seq, signature)


class StatusRefused(ReleaseRefused):
    """A guest status that its attested signer did not sign for this lease and challenge."""


def verify_status(guest: GuestIdentity, answer: Mapping[str, Any], challenge: bytes) -> int:
    """The installed seq of the guest's signed `status` answer, or StatusRefused.

    The answer may come through the host or an SSH session; only the attested signer's
    signature over (lease, seq, challenge) makes it the guest's word."""
    try:
        seq = int(answer["seq"])
        signature = bytes.fromhex(str(answer["signature"]).removeprefix("0x"))
        lease_id = int(answer["lease_id"])
    except (KeyError, ValueError, TypeError) as exc:
        raise StatusRefused(f"the guest's status answer is malformed ({exc})") from None
    if lease_id != guest.lease_id:
        raise StatusRefused(f"the status is for lease {lease_id}, not {guest.lease_id}")
    try:
        message = guest_eip712.guest_status_message(
            guest.chain_id, guest.registry, guest.lease_id, seq, challenge
        )
        signer = guest_eip712.recover(message, signature)
    except ValueError as exc:
        raise StatusRefused(f"the guest's status does not verify: {exc}") from None
    if signer != guest.signer:
        raise StatusRefused(
            f"the status is signed by {signer}, not by the guest's attested signer {guest.signer}"
        )
    return seq
