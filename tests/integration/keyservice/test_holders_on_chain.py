"""Three holders (2 of 3) on a real anvil chain: the renter's manifest and policy, a guest
attested by the simulated AMD-SP and confirmed by the verifier, each holder's loop releasing
its share in the step after AttestationVerified, and deleting it on LeaseClosed.

Two variants:
- `test_holders_follow_a_real_chain_with_a_policy_stand_in`: the real LeaseMarket and
  AttestationRegistry, the key policy from a stand-in (runs on main, before KeyService).
- `test_holders_follow_the_real_key_service`: the same through the real KeyService (holders
  registered and staked, the renter's setKeyPolicy, `isReleasable`); needs the KeyService
  contract and `chain.keys` (branch i-contracts) and fails, saying so, where they are missing.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from cvm import guest_eip712
from cvm.attestation.abi import parse
from cvm.attestation.binding import build_report_data, host_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.sim import SimulatedSecureProcessor
from cvm.chain import AttestationStatus, LeaseStatus
from guest.agent import GuestKeys
from keyservice.chain_view import ChainView, KeyPolicy
from keyservice.holder import Holder
from keyservice.keys import HolderKeys
from keyservice.service import Service
from keyservice.store import Store
from keyservice.wire import RELEASE_INFO, KeyManifest, seal_deposit
from tests.fixtures.chain import MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration


@dataclass
class Backend:
    """The backend's part, in memory (its HTTP side is branch i-backendkeys')."""

    deposits: list[dict] = field(default_factory=list)
    evidence_by_hash: dict[bytes, bytes] = field(default_factory=dict)
    posted: list[tuple[int, dict, float]] = field(default_factory=list)

    def shares(self, after: int) -> Any:
        return [d for d in self.deposits if d["cursor"] > after]

    def epochs(self, after: int) -> Any:
        return []

    def evidence(self, report_hash: bytes) -> bytes:
        return self.evidence_by_hash[report_hash]

    def post_release(self, lease_id: int, release: dict[str, Any]) -> None:
        self.posted.append((lease_id, release, time.monotonic()))


class PolicyStandIn(ChainView):
    """The real chain for leases and attestations; the key policy from a dict, and
    `isReleasable` computed as KeyService specifies it (INTERFACES 3)."""

    def __init__(self, client: Any, policies: dict[int, KeyPolicy]) -> None:
        super().__init__(client)
        self.policies = policies

    def key_policy(self, lease_id: int) -> KeyPolicy | None:
        return self.policies.get(lease_id)

    def is_releasable(self, lease_id: int, measurement: bytes) -> bool:
        policy = self.policies.get(lease_id)
        attestation = self.attestation(lease_id)
        return (
            policy is not None
            and measurement in policy.measurements
            and self.lease(lease_id)[1] == LeaseStatus.ACTIVE
            and attestation.status == AttestationStatus.VERIFIED
            and attestation.measurement == measurement
        )


def manifest_for(chain: ChainSystem, lease_id: int, holders: list[HolderKeys]) -> KeyManifest:
    epoch_key = ed25519.Ed25519PrivateKey.generate().public_key()
    return KeyManifest(
        lease_id=lease_id, key_version=1, threshold=2,
        holders=tuple(h.address for h in holders),
        holder_keys=tuple(h.x25519_public for h in holders),
        root_commitment=secrets.token_bytes(32),
        epoch_key=epoch_key.public_bytes(Encoding.Raw, PublicFormat.Raw),
    )  # fmt: skip


def deposits(chain: ChainSystem, manifest: KeyManifest, holders: list[HolderKeys]) -> list[dict]:
    registry = chain.deployment.attestation_registry
    signature = guest_eip712.sign(
        manifest.message(chain.deployment.chain_id, registry), chain.accounts.renter
    )
    manifest_hash = manifest.manifest_hash(chain.deployment.chain_id, registry)
    found = []
    for index, holder in enumerate(holders, start=1):
        enc, ciphertext = seal_deposit(holder.x25519_public, manifest_hash, manifest.lease_id,
                                       1, index, bytes([index]) * 32)  # fmt: skip
        share_signature = guest_eip712.sign(
            guest_eip712.key_share_message(
                chain.deployment.chain_id, registry, manifest_hash, index, enc, ciphertext
            ),
            chain.accounts.renter,
        )
        found.append({
            "cursor": 1, "lease_id": manifest.lease_id, "key_version": 1,
            "manifest": manifest.to_json(), "signature": "0x" + signature.hex(),
            "enc": base64.b64encode(enc).decode(),
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "share_signature": "0x" + share_signature.hex(),
        })  # fmt: skip
    return found


def attest_and_confirm(
    chain: ChainSystem, lease_id: int, chip: SimulatedSecureProcessor, backends: list[Backend]
) -> tuple[GuestKeys, bytes, float]:
    """The node submits a simulated report of a fresh guest, the verifier confirms it."""
    guest = GuestKeys()
    deployment = chain.deployment
    nonce = chain.node.attestations.attestation_nonce(lease_id)
    data = build_report_data(deployment.chain_id, deployment.attestation_registry, lease_id,
                             nonce, guest.public)  # fmt: skip
    launched = host_data(deployment.chain_id, deployment.attestation_registry, lease_id,
                         chain.accounts.renter.address)  # fmt: skip
    signed = chip.attest(measurement=MEASUREMENT, report_data=data, host_data=launched)
    bundle = EvidenceBundle(
        report=signed.report, vcek=signed.vcek_der, chain=signed.chain_pem,
        chain_id=deployment.chain_id, registry=deployment.attestation_registry,
        lease_id=lease_id, nonce=nonce, guest_key=guest.public,
    )  # fmt: skip
    for backend in backends:
        backend.evidence_by_hash[bundle.report_hash] = bundle.encode()
    chain.submit(lease_id, bundle.report_hash)
    chain.verifier.attestations.confirm(lease_id, bundle.report_hash, True)
    return guest, bundle.report_hash, time.monotonic()


def run_holders(
    chain: ChainSystem,
    lease_id: int,
    holders: list[HolderKeys],
    views: list[Any],
    set_policy: Callable[[KeyManifest], None],
    chip: SimulatedSecureProcessor,
    tmp_path: Any,
) -> None:
    backends = [Backend() for _ in holders]
    stores = [Store(tmp_path / f"holder{i}") for i in range(len(holders))]
    services = [
        Service(Holder(keys, view, backend, store, roots=[chip.ark]))
        for keys, view, backend, store in zip(holders, views, backends, stores, strict=True)
    ]
    manifest = manifest_for(chain, lease_id, holders)
    set_policy(manifest)
    for backend, item in zip(backends, deposits(chain, manifest, holders), strict=True):
        backend.deposits.append(item)
    for service in services:
        service.start()
        service.step()
    assert all(store.share(lease_id) is not None for store in stores)

    guest, report_hash, verified_at = attest_and_confirm(chain, lease_id, chip, backends)
    for service in services:
        service.step()
    delays = []
    for index, (backend, holder) in enumerate(zip(backends, holders, strict=True), start=1):
        ((posted_lease, release, posted_at),) = backend.posted
        delays.append(posted_at - verified_at)
        assert posted_lease == lease_id and release["report_hash"] == "0x" + report_hash.hex()
        suite = CipherSuite.new(
            KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
        )
        context = suite.create_recipient_context(
            base64.b64decode(release["enc"]), KEMKey.from_pyca_cryptography_key(guest.hpke_private),
            info=RELEASE_INFO, pks=suite.kem.deserialize_public_key(holder.x25519_public),
        )  # fmt: skip
        report_data = parse(EvidenceBundle.decode(backend.evidence_by_hash[report_hash]).report)
        opened = json.loads(context.open(base64.b64decode(release["ciphertext"]),
                                         aad=report_data.report_data))  # fmt: skip
        assert base64.b64decode(opened["share"]) == bytes([index]) * 32
    print(f"Verified -> released (3 holders, one step each): max {max(delays) * 1000:.0f} ms")

    chain.renter.leases.close_lease(lease_id)
    for service in services:
        service.step()
    assert all(store.share(lease_id) is None for store in stores)


@pytest.fixture(scope="module")
def chip() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


def test_holders_follow_a_real_chain_with_a_policy_stand_in(chain, chip, tmp_path):
    lease_id = chain.active_lease()
    holders = [HolderKeys.generate() for _ in range(3)]
    policies: dict[int, KeyPolicy] = {}
    deployment = chain.deployment

    def set_policy(manifest: KeyManifest) -> None:
        digest = manifest.manifest_hash(deployment.chain_id, deployment.attestation_registry)
        policies[lease_id] = KeyPolicy(
            measurements=(MEASUREMENT,), failover=True, threshold=2, holders=manifest.holders,
            key_version=1, manifest_hash=digest,
        )  # fmt: skip

    views = [PolicyStandIn(chain.client(), policies) for _ in holders]
    run_holders(chain, lease_id, holders, views, set_policy, chip, tmp_path)


def test_holders_follow_the_real_key_service(chain, chip, tmp_path):
    client = chain.client()
    assert getattr(client, "keys", None) is not None, (
        "no KeyService in this deployment: this test needs the KeyService contract and its"
        " bindings (chain.keys, branch i-contracts)"
    )
    from cvm.chain import KeyPolicy as ChainKeyPolicy  # type: ignore[attr-defined]

    holders = []
    for _ in range(3):
        key = x25519.X25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        holders.append(HolderKeys(chain.staked_holder(public), key))  # type: ignore[attr-defined]
    lease_id = chain.active_lease()
    deployment = chain.deployment

    def set_policy(manifest: KeyManifest) -> None:
        chain.renter.keys.set_key_policy(  # type: ignore[attr-defined]
            lease_id,
            ChainKeyPolicy(
                measurements=(MEASUREMENT,), failover=True, threshold=2,
                holders=manifest.holders, key_version=1,
                manifest_hash=manifest.manifest_hash(
                    deployment.chain_id, deployment.attestation_registry
                ),
            ),
        )  # fmt: skip

    views = [ChainView(client) for _ in holders]
    run_holders(chain, lease_id, holders, views, set_policy, chip, tmp_path)
