"""A holder's checks, each in one method a test can call: take a deposit, take an epoch
record, release a share to an attested guest, forget a closed lease.

- deposit: the manifest lists this holder (address and X25519 key) at the index its share
  says; the renter the chain names for the lease signed the manifest (EIP-712); the manifest's
  hash and key version are the lease's on-chain key policy's; the share opens with this
  holder's key under that manifest hash; no older key version than the one kept, and never
  for a lease seen closed.
- release: the lease's latest attestation on chain is Verified with this report hash and a
  measurement the policy allows; `isReleasable` on chain; the evidence (fetched by report hash)
  verifies here: AMD's roots (the simulated ones only when trusted), that measurement,
  REPORT_DATA bound to (chain, registry, lease, nonce - 1) and the guest key, HOST_DATA to the
  lease and its renter. Then the share is sealed to the guest key (HPKE auth mode) with the
  latest epoch record verified. Once per report hash.
- epoch: signed by the manifest's epochKey over INTERFACES 6's bytes; only ever higher.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from cvm import guest_eip712
from cvm.attestation.errors import AttestationError
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import verify_guest
from cvm.chain import AttestationStatus, LeaseStatus
from keyservice.backend import HolderBackend
from keyservice.chain_view import HolderChain
from keyservice.keys import HolderKeys
from keyservice.store import Store, StoredEpoch, StoredShare
from keyservice.wire import (
    MAX_CIPHERTEXT_BYTES,
    EpochRecord,
    KeyManifest,
    Refused,
    open_deposit,
    seal_release,
    unb64,
    unhex,
)

log = logging.getLogger("keyservice")

MAX_LEASES = 10_000
MAX_EVIDENCE_BYTES = 64 * 1024


class NotYet(Exception):
    """Nothing wrong, but not now (the chain has not caught up): try again later."""


@dataclass(frozen=True)
class Release:
    lease_id: int
    report_hash: bytes
    key_version: int
    index: int


class Holder:
    def __init__(
        self,
        keys: HolderKeys,
        chain: HolderChain,
        backend: HolderBackend,
        store: Store,
        *,
        roots: Sequence[x509.Certificate] | None = None,
        max_leases: int = MAX_LEASES,
    ) -> None:
        self.keys = keys
        self.chain = chain
        self.backend = backend
        self.store = store
        self.roots = roots  # None: AMD's own roots only
        self.max_leases = max_leases

    # --- deposits ------------------------------------------------------------------------

    def accept_deposit(self, deposit: object) -> StoredShare:
        """Check and store one deposit (`Refused` saying why not; `NotYet` if the chain's
        policy is behind the manifest)."""
        if not isinstance(deposit, dict):
            raise Refused("a deposit is not a JSON object")
        manifest = KeyManifest.from_json(deposit.get("manifest"))
        lease_id = manifest.lease_id
        if deposit.get("lease_id") != lease_id or deposit.get("key_version") != (
            manifest.key_version
        ):
            raise Refused("the deposit's lease or key version is not its manifest's")
        signature = unhex(deposit.get("signature"), "signature", 65)
        enc = unb64(deposit.get("enc"), "enc", 32)
        ciphertext = unb64(deposit.get("ciphertext"), "ciphertext", MAX_CIPHERTEXT_BYTES)
        index = manifest.index_of(self.keys.address)
        if manifest.holder_keys[index - 1] != self.keys.x25519_public:
            raise Refused("the manifest lists this holder with another X25519 key")
        if self.store.is_closed(lease_id):
            raise Refused(f"lease {lease_id} is closed: a replayed deposit")
        kept = self.store.share(lease_id)
        if kept is not None and kept.key_version > manifest.key_version:
            raise Refused(
                f"key version {manifest.key_version} of lease {lease_id} is older than the"
                f" kept {kept.key_version}: a replayed deposit"
            )
        if kept is None and self.store.count() >= self.max_leases:
            raise Refused(f"this holder keeps at most {self.max_leases} leases")
        renter, status = self.chain.lease(lease_id)
        if status in (LeaseStatus.NONE, LeaseStatus.CLOSED):
            raise Refused(f"lease {lease_id} is {status.name.lower()} on chain")
        chain_id, registry = self.chain.chain_id, self.chain.registry
        signer = manifest.signer(chain_id, registry, signature)
        if signer.lower() != renter.lower():
            raise Refused(f"the manifest is signed by {signer}, not by the lease's renter {renter}")
        manifest_hash = manifest.manifest_hash(chain_id, registry)
        policy = self.chain.key_policy(lease_id)
        if policy is None or policy.key_version < manifest.key_version:
            raise NotYet(f"lease {lease_id} has no key policy for version {manifest.key_version}")
        if policy.key_version != manifest.key_version or policy.manifest_hash != manifest_hash:
            raise Refused(
                f"the manifest (v{manifest.key_version}, 0x{manifest_hash.hex()}) is not the"
                f" lease's on-chain policy (v{policy.key_version},"
                f" 0x{policy.manifest_hash.hex()})"
            )
        if tuple(h.lower() for h in policy.holders) != tuple(h.lower() for h in manifest.holders):
            raise Refused("the manifest's holders are not the on-chain policy's")
        if policy.threshold != manifest.threshold:
            raise Refused("the manifest's threshold is not the on-chain policy's")
        # HPKE base mode: anyone (the backend) can seal a share to this holder's key. Only a
        # share the renter signed (EIP-712 KeyShare over its ciphertext) is taken, before it
        # is even opened: junk is refused and leaves nothing behind, so it cannot block the
        # renter's own share when that comes.
        share_signature = unhex(deposit.get("share_signature"), "share_signature", 65)
        try:
            share_signer = guest_eip712.recover(
                guest_eip712.key_share_message(
                    chain_id, registry, manifest_hash, index, enc, ciphertext
                ),
                share_signature,
            )
        except ValueError as exc:
            raise Refused(f"the share's signature does not recover: {exc}") from None
        if share_signer.lower() != renter.lower():
            raise Refused(
                f"the share of lease {lease_id} v{manifest.key_version} is not signed by the"
                f" lease's renter {renter}"
            )
        opened = open_deposit(self.keys.x25519_private, manifest_hash, enc, ciphertext)
        if (opened.lease_id, opened.key_version, opened.index) != (
            lease_id, manifest.key_version, index,
        ):  # fmt: skip
            raise Refused(
                f"the share says (lease {opened.lease_id}, v{opened.key_version}, index"
                f" {opened.index}); this holder is index {index} of lease {lease_id}"
                f" v{manifest.key_version}"
            )
        if kept is not None and kept.key_version == manifest.key_version:
            if kept.manifest_hash == manifest_hash and kept.share == opened.share:
                return kept  # the same deposit again: nothing to do
            raise Refused(f"lease {lease_id} v{manifest.key_version} already has another share")
        stored = StoredShare(lease_id, manifest.key_version, index, opened.share,
                             manifest.to_json(), manifest_hash, renter)  # fmt: skip
        self.store.put_share(stored)
        log.info("kept share %d of lease %d v%d", index, lease_id, manifest.key_version)
        return stored

    # --- epochs --------------------------------------------------------------------------

    def accept_epoch(self, data: object) -> bool:
        """Verify an epoch record and keep it if higher (True); Refused if it is forged or
        lower than the one kept."""
        record = EpochRecord.from_json(data)
        kept = self.store.share(record.lease_id)
        if kept is None:
            raise Refused(f"no share of lease {record.lease_id} here")
        if kept.key_version != record.key_version:
            raise Refused(
                f"epoch record for key version {record.key_version}, the kept one is"
                f" {kept.key_version}"
            )
        epoch_key = unhex(kept.manifest["epochKey"], "epochKey", 32)
        record.verify(epoch_key, self.chain.chain_id, self.chain.registry)
        current = self.store.epoch(record.lease_id)
        if current is not None:
            if record.epoch == current.epoch and record.snapshot == current.snapshot:
                return False  # the same record again
            if record.epoch <= current.epoch:
                raise Refused(
                    f"epoch {record.epoch} of lease {record.lease_id} is not above the kept"
                    f" {current.epoch}: an epoch never goes down"
                )
        stored = StoredEpoch(record.key_version, record.epoch, record.snapshot, record.signature)
        return self.store.raise_epoch(record.lease_id, stored)

    # --- release -------------------------------------------------------------------------

    def release(self, lease_id: int, report_hash: bytes | None = None) -> Release | None:
        """Release this holder's share to the lease's guest if every check holds: None when
        there is nothing to do (no share, not Verified, already released), `Refused` when a
        check fails. `report_hash` (from an AttestationVerified event) must be the chain's
        latest Verified one."""
        share = self.store.share(lease_id)
        if share is None:
            return None
        attestation = self.chain.attestation(lease_id)
        if attestation.status != AttestationStatus.VERIFIED:
            if report_hash is not None:
                raise Refused(f"lease {lease_id}'s latest attestation is not Verified")
            return None
        if report_hash is not None and attestation.report_hash != report_hash:
            raise Refused(
                f"report 0x{report_hash.hex()} is not lease {lease_id}'s latest Verified one"
                f" (0x{attestation.report_hash.hex()})"
            )
        report_hash = attestation.report_hash
        if self.store.released(lease_id, report_hash):
            return None
        renter, status = self.chain.lease(lease_id)
        if status != LeaseStatus.ACTIVE:
            raise Refused(f"lease {lease_id} is not active on chain")
        if renter.lower() != share.renter.lower():
            raise Refused("the lease's renter on chain is not the one who signed the manifest")
        policy = self.chain.key_policy(lease_id)
        if policy is None:
            raise Refused(f"lease {lease_id} has no key policy on chain")
        if policy.key_version > share.key_version:
            self.store.drop_lease(lease_id, closed=False)
            raise Refused(f"lease {lease_id} was rekeyed to v{policy.key_version}: share dropped")
        if (policy.key_version, policy.manifest_hash) != (share.key_version, share.manifest_hash):
            raise Refused("the kept manifest is not the lease's on-chain policy")
        measurement = attestation.measurement
        if measurement not in policy.measurements:
            raise Refused(f"measurement {measurement.hex()} is not allowed by lease {lease_id}")
        if not self.chain.is_releasable(lease_id, measurement):
            raise Refused(f"the chain says lease {lease_id} is not releasable")
        raw = self.backend.evidence(report_hash)
        if len(raw) > MAX_EVIDENCE_BYTES:
            raise Refused("the evidence is too large")
        try:
            bundle = EvidenceBundle.decode(raw)
        except AttestationError as exc:
            raise Refused(f"the backend's evidence is malformed: {exc}") from None
        if bundle.report_hash != report_hash:
            raise Refused("the backend served evidence of another report than the chain's")
        nonce = self.chain.attestation_nonce(lease_id) - 1
        try:
            guest = verify_guest(
                bundle,
                chain_id=self.chain.chain_id,
                registry=self.chain.registry,
                lease_id=lease_id,
                nonce=nonce,
                renter=renter,
                expected_measurement=measurement,
                trusted_roots=self.roots,
            )
        except AttestationError as exc:
            raise Refused(f"the guest's evidence does not hold: {exc}") from None
        kept_epoch = self.store.epoch(lease_id)
        # A record of an earlier key version (kept over a rekey) still floors the epoch: the
        # guest checks it with that version's epoch key (the bundle's previous roots).
        epoch = kept_epoch if kept_epoch and kept_epoch.key_version <= share.key_version else None
        enc, ciphertext = seal_release(
            self.keys.x25519_private, guest.hpke_public, guest.report_data,
            lease_id=lease_id, key_version=share.key_version, index=share.index,
            share=share.share, epoch=epoch.epoch if epoch else 0,
            snapshot=epoch.snapshot if epoch else None,
            epoch_signature=epoch.signature if epoch else None,
            epoch_key_version=epoch.key_version if epoch else None,
        )  # fmt: skip
        self.backend.post_release(
            lease_id,
            {
                "holder": self.keys.address,
                "key_version": share.key_version,
                "report_hash": "0x" + report_hash.hex(),
                "enc": base64.b64encode(enc).decode(),
                "ciphertext": base64.b64encode(ciphertext).decode(),
            },
        )
        self.store.mark_released(lease_id, report_hash)
        log.info("released share %d of lease %d to report 0x%s", share.index, lease_id,
                 report_hash.hex())  # fmt: skip
        return Release(lease_id, report_hash, share.key_version, share.index)

    # --- the chain's word on a lease ------------------------------------------------------

    def lease_closed(self, lease_id: int) -> None:
        self.store.drop_lease(lease_id, closed=True)
        log.info("lease %d closed: its share is deleted", lease_id)

    def policy_changed(self, lease_id: int) -> None:
        """A rekey (a higher key version on chain) makes the kept share useless: drop it."""
        share = self.store.share(lease_id)
        if share is None:
            return
        policy = self.chain.key_policy(lease_id)
        if policy is not None and policy.key_version > share.key_version:
            self.store.drop_lease(lease_id, closed=False)
            log.info("lease %d rekeyed to v%d: share of v%d deleted", lease_id,
                     policy.key_version, share.key_version)  # fmt: skip

    def catch_up(self, lease_id: int) -> Release | None:
        """At start, or after a missed stretch: apply the chain's current state to a lease."""
        _, status = self.chain.lease(lease_id)
        if status == LeaseStatus.CLOSED:
            self.lease_closed(lease_id)
            return None
        self.policy_changed(lease_id)
        return self.release(lease_id)
