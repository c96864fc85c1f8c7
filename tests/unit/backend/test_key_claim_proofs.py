"""Evidence claims a guest key only when its report proves it: a genuine report of the lease
(verifying to a trusted root, the lease's measurement, HOST_DATA of the lease and renter)
whose REPORT_DATA binds the lease, its nonce and the key's SHA-256. A node that merely names
another guest's key in its evidence, or posts another lease's genuine report as its own,
claims nothing: the honest lease's node is never told its own guest's key is claimed."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import datetime
from typing import Any

import pytest
from alembic import command
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from backend.api.deps import AppContext
from backend.store import Attestation, Evidence, Lease, Store
from backend.store.db import alembic_config, migrate
from backend.verifier import Verifier, VerifierConfig
from cvm.api_models import AttestationState, ChainInfo, LeaseState
from cvm.attestation import SimulatedSecureProcessor
from cvm.attestation.abi import REPORT_SIZE
from cvm.attestation.binding import build_report_data, host_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.sim import DEFAULT_POLICY, SimulatedAmd
from node_agent.launcher.signer import simulated_guest_key
from tests.unit.backend.factories import Clock, add_lease, new_account, upload_headers

RENTER = "0x" + "44" * 20
MEASUREMENT = bytes.fromhex("ab" * 48)  # the factories' expected measurement
VICTIM, ATTACKER = 1, 2
DEBUG = 1 << 19  # the guest policy's DEBUG bit


@pytest.fixture(scope="module")
def amd_sp() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


@pytest.fixture(scope="module")
def rogue_sp() -> SimulatedSecureProcessor:
    """A chip under an AMD of the attacker's own making (roots nobody trusts)."""
    return SimulatedSecureProcessor("Milan", amd=SimulatedAmd(rsa_key_size=2048))


@pytest.fixture
def nodes(store: Store, context: AppContext, amd_sp: SimulatedSecureProcessor) -> dict[int, Any]:
    """The victim's lease and the attacker's, each active on its own node; the API trusts
    the simulated AMD-SP as its verifier does."""
    context.trusted_roots = [amd_sp.ark]
    context.settings.evidence_max_bytes = 64 * 1024  # a report with its certificates
    accounts = {VICTIM: new_account(), ATTACKER: new_account()}
    for lease_id, node in accounts.items():
        add_lease(store, lease_id, RENTER, node=node.address.lower(), status=LeaseState.ACTIVE)
    return accounts


def _evidence(
    chain: ChainInfo,
    amd_sp: SimulatedSecureProcessor,
    lease_id: int,
    key: bytes,
    *,
    bound_key: bytes | None = None,
    bound_lease: int | None = None,
    measurement: bytes = MEASUREMENT,
    policy: int = DEFAULT_POLICY,
) -> EvidenceBundle:
    """A bundle naming `lease_id` and `key`, its report genuine for `bound_lease` (default:
    the same lease) and binding `bound_key` (default: the same key)."""
    bound = lease_id if bound_lease is None else bound_lease
    report_data = build_report_data(
        chain.chain_id,
        chain.attestation_registry,
        bound,
        0,
        key if bound_key is None else bound_key,
    )
    launch = host_data(chain.chain_id, chain.attestation_registry, bound, RENTER)
    signed = amd_sp.attest(
        measurement=measurement, report_data=report_data, host_data=launch, policy=policy
    )
    return EvidenceBundle(
        report=signed.report,
        vcek=signed.vcek_der,
        chain=signed.chain_pem,
        chain_id=chain.chain_id,
        registry=chain.attestation_registry,
        lease_id=lease_id,
        nonce=0,
        guest_key=key,
    )


def _upload(client: TestClient, context: AppContext, node: LocalAccount, bundle: bytes) -> str:
    """Upload as `node` (it must be accepted: the backend keeps evidence for the verifier
    whether it proves anything or not); the report hash."""
    headers = upload_headers(node, bundle, context.domain, int(context.clock()))
    response = client.post("/v1/evidence", content=bundle, headers=headers)
    assert response.status_code == 201, response.text
    report_hash: str = response.json()["report_hash"]
    return report_hash


def _upload_receipt(
    client: TestClient, context: AppContext, node: LocalAccount, bundle: bytes
) -> dict[str, Any]:
    headers = upload_headers(node, bundle, context.domain, int(context.clock()))
    response = client.post("/v1/evidence", content=bundle, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _claim(client: TestClient, key: bytes, lease_id: int) -> dict[str, Any] | None:
    """What the claim route tells the node of `lease_id` about `key` (None: free for it)."""
    import hashlib

    key_hash = "0x" + hashlib.sha256(key).hexdigest()
    response = client.get(f"/v1/guest-keys/{key_hash}/claim", params={"lease_id": lease_id})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _attested(store: Store, lease_id: int, report_hash: str) -> None:
    """The lease's attestation with `report_hash` is pending on chain (as indexed)."""
    with store.session() as session:
        session.add(
            Attestation(
                lease_id=lease_id, node="0x" + "01" * 20, status=AttestationState.PENDING,
                report_hash=report_hash, measurement="0x" + MEASUREMENT.hex(), nonce=0,
                submitted_block=1, submitted_at=1, verified_at=None, expires_at=None,
            )
        )  # fmt: skip


def _verifier(store: Store, chain: ChainInfo, amd_sp: SimulatedSecureProcessor) -> Verifier:
    config = VerifierConfig(chain.chain_id, chain.attestation_registry, [amd_sp.ark])
    return Verifier(store, lambda *_: "0x" + "00" * 32, config, clock=lambda: 2.0)


def test_an_honest_upload_claims_its_key_and_a_copy_loses_to_it(
    client: TestClient,
    context: AppContext,
    nodes: dict[int, LocalAccount],
    amd_sp: SimulatedSecureProcessor,
) -> None:
    key = simulated_guest_key()
    honest = _evidence(context.chain, amd_sp, VICTIM, key).encode()
    receipt = _upload_receipt(client, context, nodes[VICTIM], honest)
    assert receipt["key_claim_checked"] is True and receipt["key_claim"] is None
    assert _claim(client, key, VICTIM) is None
    claim = _claim(client, key, ATTACKER)
    assert claim is not None and claim["lease_id"] == VICTIM and claim["live"] is False
    # The renter copied the key into its guest on the other lease: genuine for that lease,
    # so it claims the key too, after the first (the victim still sees it free). The copy's
    # upload answers with the claim it loses to, as the claim route does.
    copy = _evidence(context.chain, amd_sp, ATTACKER, key).encode()
    receipt = _upload_receipt(client, context, nodes[ATTACKER], copy)
    assert receipt["key_claim_checked"] is True and receipt["key_claim"] == claim
    assert _claim(client, key, VICTIM) is None
    assert _claim(client, key, ATTACKER) == claim
    # Uploaded again (idempotent), the victim's bundle still finds its key free.
    assert _upload_receipt(client, context, nodes[VICTIM], honest)["key_claim"] is None


def test_evidence_naming_another_guests_key_claims_nothing(
    client: TestClient,
    context: AppContext,
    store: Store,
    nodes: dict[int, LocalAccount],
    amd_sp: SimulatedSecureProcessor,
    rogue_sp: SimulatedSecureProcessor,
) -> None:
    """The attacker's node posts, for its own lease and before the victim's node does,
    bundles naming the victim guest's public key K (public: the victim's evidence and its
    TLS show it). None proves K is its guest's: the victim's node finds K free and its
    report is not held against a claim. FAILED on the old code (the first bundle naming K
    claimed it: the victim's node gave its lease back)."""
    chain = context.chain
    key = simulated_guest_key()
    own_key = simulated_guest_key()
    forged = {
        # its own guest's genuine report (binding its own key), K in the bundle
        "another key bound": _evidence(chain, amd_sp, ATTACKER, key, bound_key=own_key),
        # no report at all: random bytes where the report goes
        "no report": dataclasses.replace(
            _evidence(chain, amd_sp, ATTACKER, key), report=secrets.token_bytes(REPORT_SIZE)
        ),
        # its own image on a genuine chip asks the AMD-SP to bind K: not the lease's image
        "another image": _evidence(chain, amd_sp, ATTACKER, key, measurement=bytes(48)),
        # the lease's image in a debug guest, whose memory the host can change
        "debug guest": _evidence(chain, amd_sp, ATTACKER, key, policy=DEFAULT_POLICY | DEBUG),
        # the lease's image and K bound, signed under roots of its own making
        "untrusted root": _evidence(chain, rogue_sp, ATTACKER, key),
    }
    hashes = [
        _upload(client, context, nodes[ATTACKER], bundle.encode()) for bundle in forged.values()
    ]
    with store.session() as session:
        claimed = session.scalars(
            select(Evidence.guest_key_hash).where(Evidence.lease_id == ATTACKER)
        )
        assert list(claimed) == [None] * len(forged)
    assert _claim(client, key, VICTIM) is None
    # The attacker even submits one of them on chain: still no claim, live or not.
    _attested(store, ATTACKER, hashes[0])
    assert _claim(client, key, VICTIM) is None

    honest = _evidence(chain, amd_sp, VICTIM, key)
    _attested(store, VICTIM, _upload(client, context, nodes[VICTIM], honest.encode()))
    assert _claim(client, key, VICTIM) is None
    claim = _claim(client, key, ATTACKER)
    assert claim is not None and claim["lease_id"] == VICTIM and claim["live"] is True
    with store.session() as session:
        lease, attestation = session.get(Lease, VICTIM), session.get(Attestation, VICTIM)
        assert lease is not None and attestation is not None
        judged = _verifier(store, chain, amd_sp).appraise(
            session, lease, attestation, honest.encode()
        )
    assert "GUEST_KEY_REUSED" not in judged.reasons, judged.detail


def test_a_genuine_report_of_another_lease_claims_nothing_for_this_one(
    client: TestClient,
    context: AppContext,
    nodes: dict[int, LocalAccount],
    amd_sp: SimulatedSecureProcessor,
) -> None:
    """The victim's genuine report (binding the victim's lease and key) replayed in a
    bundle of the attacker's lease, first, and again after the victim's own upload:
    REPORT_DATA and HOST_DATA bind the victim's lease, so it proves nothing for the
    attacker's. FAILED on the old code (the replay claimed the key for the attacker)."""
    key = simulated_guest_key()
    genuine = _evidence(context.chain, amd_sp, VICTIM, key)
    replayed = dataclasses.replace(genuine, lease_id=ATTACKER)
    _upload(client, context, nodes[ATTACKER], replayed.encode())
    assert _claim(client, key, VICTIM) is None
    _upload(client, context, nodes[VICTIM], genuine.encode())
    assert _claim(client, key, VICTIM) is None
    claim = _claim(client, key, ATTACKER)
    assert claim is not None and claim["lease_id"] == VICTIM


def test_the_verifier_proves_what_the_upload_could_not(
    client: TestClient,
    context: AppContext,
    store: Store,
    nodes: dict[int, LocalAccount],
    amd_sp: SimulatedSecureProcessor,
) -> None:
    """An API that does not trust the report's root cannot prove it at upload; the verifier,
    which does, proves it when it appraises the submission (here left unvoted: the signer
    was not indexed). From then on it claims the key, from its upload time."""
    context.trusted_roots = None  # AMD's own roots only
    key = simulated_guest_key()
    bundle = _evidence(context.chain, amd_sp, VICTIM, key).encode()
    uploaded_at = context.now()
    report_hash = _upload(client, context, nodes[VICTIM], bundle)
    assert _claim(client, key, ATTACKER) is None
    _attested(store, VICTIM, report_hash)
    assert _verifier(store, context.chain, amd_sp).verify(VICTIM, report_hash) is None
    claim = _claim(client, key, ATTACKER)
    assert claim is not None and claim["lease_id"] == VICTIM and claim["live"] is True
    assert datetime.fromisoformat(claim["claimed_at"]) == uploaded_at


def test_migration_0016_keeps_only_claims_the_verifier_proved(store: Store, clock: Clock) -> None:
    """Bundles stored before claims needed proof: only those this backend's verifier
    verified for their lease keep claiming their key."""
    command.downgrade(alembic_config(store.url), "0015")
    key = "0x" + "4b" * 32
    with store.engine.begin() as connection:
        for n, (lease_id, verified_for) in enumerate([(1, 1), (2, None), (3, 4)]):
            evidence = "0x" + f"{n:02x}" * 32
            connection.execute(
                text(
                    "INSERT INTO evidence (hash, report_hash, content, size, created_at,"
                    " lease_id, guest_key_hash) VALUES (:h, :h, :c, 1, :at, :lease, :key)"
                ),
                {"h": evidence, "c": b"x", "at": clock.datetime(), "lease": lease_id, "key": key},
            )
            if verified_for is not None:
                connection.execute(
                    text(
                        "INSERT INTO verifications (lease_id, report_hash, evidence_hash, ok,"
                        " reason_codes, detail, checked_at) VALUES"
                        " (:lease, :h, :h, :ok, '[]', '{}', :at)"
                    ),
                    {"lease": verified_for, "h": evidence, "ok": True, "at": clock.datetime()},
                )
    migrate(store.url)
    with store.session() as session:
        rows = session.execute(select(Evidence.lease_id, Evidence.guest_key_hash)).all()
    assert sorted(rows) == [(1, key), (2, None), (3, None)]
