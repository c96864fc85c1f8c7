"""A small world for the holder's tests: a fake chain and backend (the holder's two
interfaces), a renter who makes a manifest and deposits, and a guest attested by the
simulated AMD-SP, whose evidence the fake backend serves."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from cvm import guest_eip712
from cvm.attestation.binding import build_report_data, host_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.sim import SimulatedSecureProcessor
from cvm.chain import Attestation, AttestationStatus, LeaseStatus
from guest.agent import GuestKeys
from keyservice.chain_view import Event, KeyPolicy
from keyservice.holder import Holder
from keyservice.keys import HolderKeys
from keyservice.store import Store
from keyservice.wire import RELEASE_INFO, EpochRecord, KeyManifest, seal_deposit

CHAIN_ID = 31337
REGISTRY = "0x" + "12" * 20
MEASUREMENT = bytes(range(48))
OTHER_MEASUREMENT = bytes(range(1, 49))


@dataclass
class FakeChain:
    chain_id: int = CHAIN_ID
    registry: str = REGISTRY
    block: int = 1
    leases: dict[int, tuple[str, LeaseStatus]] = field(default_factory=dict)
    attestations: dict[int, Attestation] = field(default_factory=dict)
    nonces: dict[int, int] = field(default_factory=dict)
    policies: dict[int, KeyPolicy] = field(default_factory=dict)
    not_releasable: set[int] = field(default_factory=set)
    log: list[Event] = field(default_factory=list)
    down: bool = False

    def head(self) -> int:
        if self.down:
            raise ConnectionError("rpc down")
        return self.block

    def events(self, from_block: int, to_block: int) -> list[Event]:
        return [e for e in self.log if from_block <= e.block <= to_block]

    def emit(self, name: str, lease_id: int, report_hash: bytes | None = None) -> None:
        self.block += 1
        self.log.append(Event(name, lease_id, report_hash, self.block))

    def lease(self, lease_id: int) -> tuple[str, LeaseStatus]:
        return self.leases.get(lease_id, ("0x" + "00" * 20, LeaseStatus.NONE))

    def attestation(self, lease_id: int) -> Attestation:
        return self.attestations.get(
            lease_id,
            Attestation(lease_id, AttestationStatus.NONE, "0x" + "00" * 20, bytes(32), b"",
                        0, 0, 0, 0),
        )  # fmt: skip

    def attestation_nonce(self, lease_id: int) -> int:
        return self.nonces.get(lease_id, 0)

    def key_policy(self, lease_id: int) -> KeyPolicy | None:
        return self.policies.get(lease_id)

    def is_releasable(self, lease_id: int, measurement: bytes) -> bool:
        policy = self.policies.get(lease_id)
        attestation = self.attestation(lease_id)
        return (
            lease_id not in self.not_releasable
            and policy is not None
            and measurement in policy.measurements
            and attestation.status == AttestationStatus.VERIFIED
            and attestation.measurement == measurement
        )


@dataclass
class FakeBackend:
    deposits: list[dict] = field(default_factory=list)
    epoch_records: list[dict] = field(default_factory=list)
    evidence_by_hash: dict[bytes, bytes] = field(default_factory=dict)
    posted: list[tuple[int, dict]] = field(default_factory=list)
    failing: bool = False
    calls: int = 0

    def _check(self) -> None:
        self.calls += 1
        if self.failing:
            raise ConnectionError("backend down")

    def shares(self, after: int) -> Any:
        self._check()
        return [d for d in self.deposits if d["cursor"] > after]

    def epochs(self, after: int) -> Any:
        self._check()
        return [e for e in self.epoch_records if e["cursor"] > after]

    def evidence(self, report_hash: bytes) -> bytes:
        self._check()
        return self.evidence_by_hash[report_hash]

    def post_release(self, lease_id: int, release: dict[str, Any]) -> None:
        self._check()
        self.posted.append((lease_id, release))


@dataclass
class Lease:
    """One lease of the world: its renter, manifest, shares and epoch key."""

    lease_id: int
    renter: Any
    manifest: KeyManifest
    signature: bytes
    shares: list[bytes]
    epoch_private: ed25519.Ed25519PrivateKey

    @property
    def manifest_hash(self) -> bytes:
        return self.manifest.manifest_hash(CHAIN_ID, REGISTRY)


class World:
    def __init__(self, tmp: Path, holders: int = 3, chip: SimulatedSecureProcessor | None = None):
        self.tmp = tmp
        self.chain = FakeChain()
        self.chip = chip or SimulatedSecureProcessor("Milan")
        self.keys = [HolderKeys.generate() for _ in range(holders)]
        self.backends = [FakeBackend() for _ in range(holders)]
        self.stores = [Store(tmp / f"holder{i}") for i in range(holders)]
        self.holders = [
            Holder(k, self.chain, b, s, roots=[self.chip.ark])
            for k, b, s in zip(self.keys, self.backends, self.stores, strict=True)
        ]
        self.cursor = 0
        self.guests: dict[int, GuestKeys] = {}

    # --- the renter ------------------------------------------------------------------------

    def lease(self, lease_id: int, *, key_version: int = 1, threshold: int = 2,
              measurements: tuple[bytes, ...] = (MEASUREMENT,),
              renter: Any = None, sign_with: Any = None) -> Lease:  # fmt: skip
        renter = renter or Account.create()
        epoch_private = ed25519.Ed25519PrivateKey.generate()
        manifest = KeyManifest(
            lease_id=lease_id, key_version=key_version, threshold=threshold,
            holders=tuple(k.address for k in self.keys),
            holder_keys=tuple(k.x25519_public for k in self.keys),
            root_commitment=secrets.token_bytes(32),
            epoch_key=epoch_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        )  # fmt: skip
        signature = guest_eip712.sign(manifest.message(CHAIN_ID, REGISTRY), sign_with or renter)
        lease = Lease(lease_id, renter, manifest, signature,
                      [secrets.token_bytes(32) for _ in self.keys], epoch_private)  # fmt: skip
        self.chain.leases[lease_id] = (renter.address, LeaseStatus.ACTIVE)
        self.chain.policies[lease_id] = KeyPolicy(
            measurements=measurements, failover=True, threshold=threshold,
            holders=manifest.holders, key_version=key_version,
            manifest_hash=lease.manifest_hash,
        )  # fmt: skip
        return lease

    def deposit(self, lease: Lease, holder: int, *, index: int | None = None,
                share: bytes | None = None, share_signer: Any = None,
                signed_index: int | None = None, **overrides: Any) -> dict:  # fmt: skip
        """Holder `holder`'s deposit of `lease` (as the backend serves it), its share signed
        by the renter (or `share_signer`)."""
        keys = self.keys[holder]
        enc, ciphertext = seal_deposit(
            keys.x25519_public, lease.manifest_hash, lease.lease_id, lease.manifest.key_version,
            index or holder + 1, share or lease.shares[holder],
        )  # fmt: skip
        share_signature = guest_eip712.sign(
            guest_eip712.key_share_message(
                CHAIN_ID, REGISTRY, lease.manifest_hash, signed_index or holder + 1, enc, ciphertext
            ),
            share_signer or lease.renter,
        )
        self.cursor += 1
        item = {
            "cursor": self.cursor,
            "lease_id": lease.lease_id,
            "key_version": lease.manifest.key_version,
            "manifest": lease.manifest.to_json(),
            "signature": "0x" + lease.signature.hex(),
            "enc": base64.b64encode(enc).decode(),
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "share_signature": "0x" + share_signature.hex(),
        }
        return item | overrides

    def deposit_all(self, lease: Lease) -> None:
        for i, holder in enumerate(self.holders):
            holder.accept_deposit(self.deposit(lease, i))

    # --- the guest -------------------------------------------------------------------------

    def attest(
        self,
        lease: Lease,
        *,
        measurement: bytes = MEASUREMENT,
        launched_for: tuple[int, str] | None = None,
        verified: bool = True,
    ) -> bytes:
        """A guest of `lease` attested (evidence in every backend); its report hash."""
        guest = self.guests[lease.lease_id] = GuestKeys()
        nonce = self.chain.nonces.get(lease.lease_id, 0)
        data = build_report_data(CHAIN_ID, REGISTRY, lease.lease_id, nonce, guest.public)
        launch_lease, launch_renter = launched_for or (lease.lease_id, lease.renter.address)
        signed = self.chip.attest(
            measurement=measurement, report_data=data,
            host_data=host_data(CHAIN_ID, REGISTRY, launch_lease, launch_renter),
        )  # fmt: skip
        bundle = EvidenceBundle(
            report=signed.report, vcek=signed.vcek_der, chain=signed.chain_pem,
            chain_id=CHAIN_ID, registry=REGISTRY, lease_id=lease.lease_id, nonce=nonce,
            guest_key=guest.public,
        )  # fmt: skip
        for backend in self.backends:
            backend.evidence_by_hash[bundle.report_hash] = bundle.encode()
        self.chain.nonces[lease.lease_id] = nonce + 1
        self.chain.attestations[lease.lease_id] = Attestation(
            lease.lease_id, AttestationStatus.VERIFIED if verified else AttestationStatus.PENDING,
            "0x" + "ab" * 20, bundle.report_hash, measurement, 7, 1, 2 if verified else 0, 10**10,
        )  # fmt: skip
        if verified:
            self.chain.emit("AttestationVerified", lease.lease_id, bundle.report_hash)
        return bundle.report_hash

    def open_release(self, lease: Lease, holder: int, release: dict) -> dict:
        """What the guest reads from one release (HPKE auth mode: sender = the holder key)."""
        guest = self.guests[lease.lease_id]
        suite = CipherSuite.new(
            KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
        )
        sender = suite.kem.deserialize_public_key(self.keys[holder].x25519_public)
        attestation = self.chain.attestations[lease.lease_id]
        bundle = EvidenceBundle.decode(
            self.backends[holder].evidence_by_hash[attestation.report_hash]
        )
        from cvm.attestation.abi import parse

        report_data = parse(bundle.report).report_data
        context = suite.create_recipient_context(
            base64.b64decode(release["enc"]), KEMKey.from_pyca_cryptography_key(guest.hpke_private),
            info=RELEASE_INFO, pks=sender,
        )  # fmt: skip
        return json.loads(context.open(base64.b64decode(release["ciphertext"]), aad=report_data))

    # --- epochs ----------------------------------------------------------------------------

    def epoch(self, lease: Lease, epoch: int, *, signer: ed25519.Ed25519PrivateKey | None = None,
              snapshot: bytes | None = None) -> dict:  # fmt: skip
        record = EpochRecord(lease.lease_id, lease.manifest.key_version, epoch,
                             snapshot or secrets.token_bytes(32), bytes(64))  # fmt: skip
        signature = (signer or lease.epoch_private).sign(record.signed_bytes(CHAIN_ID, REGISTRY))
        record = replace(record, signature=signature)
        self.cursor += 1
        return {
            "cursor": self.cursor,
            "lease_id": record.lease_id,
            "key_version": record.key_version,
            "epoch": record.epoch,
            "snapshot": "0x" + record.snapshot.hex(),
            "signature": base64.b64encode(record.signature).decode(),
        }
