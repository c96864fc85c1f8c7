"""The key service and snapshots (issue 20): key deposits by renters, shares, releases and
epoch records for key holders, keys and snapshot objects for the lease's node. Ciphertext and
signed records only; see backend.domain.keys_relay."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from backend.api.deps import AppContext, Context, DbSession, Renter, after_commit
from backend.api.errors import ApiError
from backend.api.limits import read_limited
from backend.api.node_reads import authorized_node_read
from backend.domain import challenge_requests, keys_relay, leases
from backend.domain.errors import Forbidden, NotFound, Unauthenticated
from backend.objects import ObjectCorrupt, ObjectNotFound, ObjectStoreError, lease_namespace
from backend.store import Lease
from cvm.api_models import (
    HOLDER_HEADER,
    NODE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    SNAPSHOT_CHUNK_MAX_BYTES,
    SNAPSHOT_MANIFEST_MAX_BYTES,
    TIMESTAMP_HEADER,
    ChallengeRequestView,
    EpochRecordIn,
    EpochRecordView,
    GuestKeysView,
    KeyDepositIn,
    KeyDepositView,
    KeyReleaseIn,
    KeyReleaseView,
    KeyShareView,
    LeaseState,
    SnapshotLatestView,
    SnapshotObjectReceipt,
)
from cvm.eip712 import SignatureError
from cvm.holder_requests import verify_holder_request

router = APIRouter(tags=["key service"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]
HolderPath = Annotated[
    str, Path(pattern=r"^0x[0-9a-fA-F]{40}$", description="the key holder's address")
]
ChunkPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the chunk")]
EpochPath = Annotated[int, Path(ge=0, le=2**63 - 1, description="the snapshot's epoch")]
After = Annotated[int, Query(ge=0, le=2**63 - 1, description="the last cursor already seen")]
Limit = Annotated[int, Query(ge=1, le=keys_relay.MAX_PAGE, description="rows at most")]
NodeHeader = Annotated[str | None, Header(alias=NODE_HEADER)]
HolderHeader = Annotated[str | None, Header(alias=HOLDER_HEADER)]
TimestampHeader = Annotated[str | None, Header(alias=TIMESTAMP_HEADER)]
SignatureHeader = Annotated[str | None, Header(alias=SIGNATURE_HEADER)]
NonceHeader = Annotated[str | None, Header(alias=NONCE_HEADER)]

_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not signed in / bad signature"},
    403: {"description": "not yours"},
    404: {"description": "no such lease or record"},
}
_NODE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"description": "a replayed request nonce, or a version or epoch not forward"},
}


# --- who is asking --------------------------------------------------------------------------


def _signed_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def authorized_holder(
    context: AppContext,
    writer: Session | None,
    request: Request,
    body: bytes,
    what: str,
    signed: tuple[str | None, str | None, str | None, str | None],
) -> str:
    """The holder (lower-case) whose signed request this is, once it is fresh, unused and a
    registered, staked key holder on chain; its nonce spent in `writer` (or a session of its
    own for a read)."""
    holder, timestamp, nonce, signature = signed
    now = int(context.clock())
    window_s = context.settings.heartbeat_window_s
    try:
        verified = verify_holder_request(
            holder, timestamp, nonce, signature, method=request.method,
            path=_signed_path(request), body=body, domain=context.domain, now=now,
            window_s=window_s,
        )  # fmt: skip
    except SignatureError as exc:
        raise Unauthenticated(f"holder request rejected: {exc}") from None
    address = verified.holder.lower()
    context.limit_address(address, what)
    if context.key_holders is None:
        raise ApiError(503, "this backend follows no key service: holder requests are refused")
    if not context.key_holders(address):
        raise Forbidden(f"{address} is not a registered, staked key holder")
    if writer is None:
        with context.store.session() as own:
            leases.consume_request_nonce(
                own, address, verified.nonce, verified.timestamp, now=now, window_s=window_s
            )
    else:
        leases.consume_request_nonce(
            writer, address, verified.nonce, verified.timestamp, now=now, window_s=window_s
        )
    return address


@dataclass(frozen=True)
class HolderSigned:
    """The headers of a holder-signed request (EIP-712 HolderRequest: holder, timestamp,
    nonce, signature), checked by `authorize` once the route has the bytes they sign."""

    context: AppContext
    request: Request
    headers: tuple[str | None, str | None, str | None, str | None]

    def authorize(self, writer: Session | None, body: bytes, what: str) -> str:
        """`authorized_holder` of this request: the holder, its nonce spent."""
        return authorized_holder(self.context, writer, self.request, body, what, self.headers)

    def read_own(self, address: str, owned: str) -> str:
        """The holder of a (bodiless) read of what `address` holds, which must be its own."""
        signer = self.authorize(None, b"", "holder-reads")
        if signer != address.lower():
            raise Forbidden(f"a holder reads only {owned}")
        return signer


def _holder_signed(
    request: Request,
    context: Context,
    holder: HolderHeader = None,
    timestamp: TimestampHeader = None,
    nonce: NonceHeader = None,
    signature: SignatureHeader = None,
) -> HolderSigned:
    # Only gathered here: the checks spend the nonce, which must not happen before FastAPI
    # validated the route's own parameters (a refused request keeps its nonce unspent).
    return HolderSigned(context, request, (holder, timestamp, nonce, signature))


HolderRequest = Annotated[HolderSigned, Depends(_holder_signed)]


@dataclass(frozen=True)
class NodeSigned:
    """The headers of a request signed by a lease's node (EIP-712 NodeRequest: node,
    timestamp, signature, nonce), checked by `write` or `read`."""

    context: AppContext
    headers: tuple[str | None, str | None, str | None, str | None]

    def write(self, session: Session, lease_id: int, what: str) -> Lease:
        return _node_write(self.context, session, lease_id, what, self.headers)

    def read(self, session: Session, lease_id: int, what: str) -> Lease:
        return _node_read(self.context, session, lease_id, what, self.headers)

    def require(self, what: str) -> None:
        """Unauthenticated before anything else is done for an unsigned `what`."""
        if self.headers[0] is None:
            raise Unauthenticated(f"{what} are signed by the lease's node ({NODE_HEADER})")


def _node_signed(
    context: Context,
    node: NodeHeader = None,
    timestamp: TimestampHeader = None,
    signature: SignatureHeader = None,
    nonce: NonceHeader = None,
) -> NodeSigned:
    return NodeSigned(context, (node, timestamp, signature, nonce))


NodeRequest = Annotated[NodeSigned, Depends(_node_signed)]


def _node_write(
    context: AppContext,
    session: Session,
    lease_id: int,
    what: str,
    signed: tuple[str | None, str | None, str | None, str | None],
) -> Lease:
    """The running lease once its accepting node's signed request passed (nonce spent in
    this writing session)."""
    node, timestamp, signature, nonce = signed
    if node is None:
        raise Unauthenticated(f"this request is signed by the lease's node ({NODE_HEADER})")
    now = int(context.clock())
    window_s = context.settings.heartbeat_window_s
    lease, request = leases.verified_node_request(
        session, lease_id, node, timestamp, signature, nonce,
        domain=context.domain, now=now, window_s=window_s, accepted_only=True,
    )  # fmt: skip
    context.limit_address(request.node.lower(), what)
    leases.consume_request_nonce(
        session, request.node, request.nonce, request.timestamp, now=now, window_s=window_s
    )
    _running(lease)
    return lease


def _node_read(
    context: AppContext,
    session: Session,
    lease_id: int,
    what: str,
    signed: tuple[str | None, str | None, str | None, str | None],
) -> Lease:
    node, timestamp, signature, nonce = signed
    if node is None:
        raise Unauthenticated(f"this read is signed by the lease's node ({NODE_HEADER})")
    lease = authorized_node_read(
        context, session, lease_id, what, node, timestamp, signature, nonce, accepted_only=True
    )
    _running(lease)
    return lease


def _running(lease: Lease) -> None:
    # A node the lease failed away from is no longer its node (lease.node changed), and a
    # closed lease runs nowhere: neither reads its keys or snapshots.
    if lease.status != LeaseState.ACTIVE:
        raise Forbidden(f"lease {lease.id} is {lease.status}: only a running lease's node asks")


def _notify(context: AppContext, session: Session, lease_id: int, node: str | None) -> None:
    if node is not None:
        for listener in context.key_listeners:
            after_commit(session, partial(listener, lease_id, node))


# --- the renter -----------------------------------------------------------------------------


@router.put(
    "/leases/{lease_id}/keys",
    response_model=KeyDepositView,
    summary="Deposit the lease's key: the renter-signed EIP-712 KeyManifest, one share sealed"
    " to each of its holders, and the sealed secret bundle (ciphertext only)",
    responses={
        **_ERRORS,
        409: {
            "description": "keyVersion below the deposited one, or the same with another manifest"
        },
        422: {
            "description": "not signed by the lease's renter, shares not matching the"
            " manifest's holders, or malformed"
        },
    },
)
def put_keys(
    lease_id: LeasePath,
    body: KeyDepositIn,
    renter: Renter,
    context: Context,
    session: DbSession,
) -> KeyDepositView:
    context.limit_address(renter, "keys")
    view, node = keys_relay.put_deposit(
        session, lease_id, renter, body, context.now(),
        chain_id=context.chain.chain_id, registry=context.chain.attestation_registry,
    )  # fmt: skip
    _notify(context, session, lease_id, node)
    return view


# --- key holders ----------------------------------------------------------------------------


@router.get(
    "/keyholders/{address}/shares",
    response_model=list[KeyShareView],
    summary="The key shares sealed to a holder, after a cursor (holder-signed request)",
    responses={**_ERRORS, 503: {"description": "no key service on this deployment"}},
)
def list_shares(
    address: HolderPath,
    session: DbSession,
    signed: HolderRequest,
    after: After = 0,
    limit: Limit = 100,
) -> list[KeyShareView]:
    signer = signed.read_own(address, "its own shares")
    return keys_relay.shares_for_holder(session, signer, after, limit)


@router.get(
    "/keyholders/{address}/epochs",
    response_model=list[EpochRecordView],
    summary="The latest epoch record of each lease a holder holds a share of, after a cursor"
    " (holder-signed request)",
    responses={**_ERRORS, 503: {"description": "no key service on this deployment"}},
)
def list_epochs(
    address: HolderPath,
    session: DbSession,
    signed: HolderRequest,
    after: After = 0,
    limit: Limit = 100,
) -> list[EpochRecordView]:
    signer = signed.read_own(address, "its own leases' epochs")
    return keys_relay.epochs_for_holder(session, signer, after, limit)


@router.post(
    "/leases/{lease_id}/key-releases",
    status_code=201,
    response_model=KeyReleaseView,
    summary="A holder's share sealed to the lease's attested guest (holder-signed request;"
    " one per holder and report, the same again replaces it)",
    responses={
        **_ERRORS,
        409: {"description": "not the lease's current keyVersion, or a replayed nonce"},
        422: {"description": "malformed"},
        503: {"description": "no key service on this deployment"},
    },
)
async def post_release(
    lease_id: LeasePath,
    body: KeyReleaseIn,
    request: Request,
    context: Context,
    signed: HolderRequest,
) -> KeyReleaseView:
    raw = await request.body()  # the signature covers these bytes (read once, kept by Starlette)
    return await run_in_threadpool(_post_release, context, raw, body, lease_id, signed)


def _post_release(
    context: AppContext, raw: bytes, body: KeyReleaseIn, lease_id: int, signed: HolderSigned
) -> KeyReleaseView:
    notify: list[tuple[int, str]] = []
    with context.store.session() as session:
        signer = signed.authorize(session, raw, "key-releases")
        view, node = keys_relay.put_release(session, lease_id, signer, body, context.now())
        if node is not None:
            notify.append((lease_id, node))
    for item in notify:  # committed: the node relays it at once
        for listener in context.key_listeners:
            listener(*item)
    return view


# --- the lease's node: keys and epochs ------------------------------------------------------


@router.get(
    "/leases/{lease_id}/keys/guest",
    response_model=GuestKeysView,
    summary="The lease's key manifest, sealed bundle and the holders' releases, for the node"
    " that accepted it (signed like the spec read)",
    responses=_ERRORS,
)
def get_guest_keys(
    lease_id: LeasePath,
    context: Context,
    session: DbSession,
    signed: NodeRequest,
) -> GuestKeysView:
    lease = signed.read(session, lease_id, "guest-keys")
    return keys_relay.guest_keys(session, lease)


@router.post(
    "/leases/{lease_id}/epochs",
    response_model=EpochRecordView,
    summary="The guest's epoch record, relayed by the lease's node: signed by the manifest's"
    " epochKey, naming a stored snapshot manifest, never below the one kept",
    responses={**_NODE_ERRORS, 422: {"description": "not signed by the epoch key, malformed"}},
)
def post_epoch(
    lease_id: LeasePath,
    body: EpochRecordIn,
    context: Context,
    session: DbSession,
    signed: NodeRequest,
) -> EpochRecordView:
    lease = signed.write(session, lease_id, "epochs")
    try:
        return keys_relay.put_epoch(
            session, lease, body, context.now(), objects=context.object_store,
            chain_id=context.chain.chain_id, registry=context.chain.attestation_registry,
        )  # fmt: skip
    except ObjectStoreError as exc:
        raise ApiError(503, f"the object store failed: {exc}") from None


@router.post(
    "/leases/{lease_id}/challenge-request",
    status_code=202,
    response_model=ChallengeRequestView,
    summary="The lease's node asks to be challenged (its guest was relaunched and may not"
    " re-attest before a challenge); the backend's failover watch challenges the lease on chain"
    " when the chain allows it. One pending request per lease; the same again is a no-op",
    responses={
        **_NODE_ERRORS,
        501: {"description": "no key service on this deployment: no failover watch to ask"},
    },
)
def post_challenge_request(
    lease_id: LeasePath,
    context: Context,
    session: DbSession,
    signed: NodeRequest,
) -> ChallengeRequestView:
    # Only the lease's current node (it stops only its own pay by being challenged).
    lease = signed.write(session, lease_id, "challenge-requests")
    if context.key_holders is None:
        # The failover watch that acts on requests runs only on a key-service deployment.
        raise ApiError(501, "this backend follows no key service: it challenges on no request")
    assert lease.node is not None  # an active lease's node signed the request
    return challenge_requests.request_challenge(session, lease, lease.node, context.now())


@router.get(
    "/leases/{lease_id}/epochs/latest",
    response_model=EpochRecordView,
    summary="The lease's highest epoch record (public: it is signed by the lease's epoch key)",
    responses={404: {"description": "no such lease, or no epoch recorded"}},
)
def get_latest_epoch(lease_id: LeasePath, session: DbSession) -> EpochRecordView:
    return keys_relay.latest_epoch(session, lease_id)


# --- the lease's node: snapshot objects -----------------------------------------------------


def _put_object(
    context: AppContext,
    lease_id: int,
    kind: str,
    name: str,
    data: bytes,
    signed: NodeSigned,
) -> SnapshotObjectReceipt:
    with context.store.session() as session:
        lease = signed.write(session, lease_id, "snapshots")
        session.refresh(lease, with_for_update=True)  # one upload per lease at a time: quota
        try:
            return keys_relay.put_snapshot_object(
                session, context.object_store, lease, kind, name, data, context.now(),
                quota_bytes=context.settings.snapshot_lease_quota_bytes,
            )  # fmt: skip
        except ObjectStoreError as exc:
            raise ApiError(503, f"the object store failed: {exc}") from None


def _get_object(
    context: AppContext,
    lease_id: int,
    kind: str,
    name: str,
    signed: NodeSigned,
) -> bytes:
    # A reading session (the nonce is spent in a writer of its own: on SQLite a second
    # writer inside this one would wait for itself).
    session = context.store.new_session(read_only=True)
    try:
        lease = signed.read(session, lease_id, "snapshots")
        object_id = keys_relay.snapshot_object_id(session, lease, kind, name)
    finally:
        session.rollback()
        session.close()
    try:
        return context.object_store.get(lease_namespace(lease_id), object_id)
    except ObjectNotFound:
        raise NotFound(f"snapshot {kind} {name} of lease {lease_id} (lost by the store)") from None
    except ObjectCorrupt:
        raise ApiError(
            503, f"snapshot {kind} {name} of lease {lease_id} is corrupt at rest"
        ) from None
    except ObjectStoreError as exc:
        raise ApiError(503, f"the object store failed: {exc}") from None


@router.put(
    "/leases/{lease_id}/snapshots/chunks/{chunk_id}",
    response_model=SnapshotObjectReceipt,
    summary="Store an encrypted snapshot chunk under its SHA-256 (the lease's node; at most"
    f" {SNAPSHOT_CHUNK_MAX_BYTES} bytes, within the lease's quota)",
    openapi_extra={"requestBody": {"required": True, "content": _OCTETS}},
    responses={
        **_NODE_ERRORS,
        413: {"description": "too large, or over the lease's quota"},
        422: {"description": "the bytes do not hash to the id"},
    },
)
async def put_chunk(
    lease_id: LeasePath,
    chunk_id: ChunkPath,
    request: Request,
    context: Context,
    signed: NodeRequest,
) -> SnapshotObjectReceipt:
    signed.require("snapshot uploads")
    data = await read_limited(request, SNAPSHOT_CHUNK_MAX_BYTES, "the body")
    return await run_in_threadpool(
        _put_object, context, lease_id, keys_relay.CHUNK, chunk_id, data, signed
    )


@router.get(
    "/leases/{lease_id}/snapshots/chunks/{chunk_id}",
    response_class=Response,
    summary="An encrypted snapshot chunk, for the lease's node",
    responses={**_ERRORS, 200: {"content": _OCTETS}},
)
async def get_chunk(
    lease_id: LeasePath,
    chunk_id: ChunkPath,
    context: Context,
    signed: NodeRequest,
) -> Response:
    data = await run_in_threadpool(
        _get_object, context, lease_id, keys_relay.CHUNK, chunk_id, signed
    )
    return Response(data, media_type="application/octet-stream")


@router.put(
    "/leases/{lease_id}/snapshots/manifests/{epoch}",
    response_model=SnapshotObjectReceipt,
    summary="Store the sealed snapshot manifest of an epoch (the lease's node; at most"
    f" {SNAPSHOT_MANIFEST_MAX_BYTES} bytes; its id is its SHA-256)",
    openapi_extra={"requestBody": {"required": True, "content": _OCTETS}},
    responses={**_NODE_ERRORS, 413: {"description": "too large, or over the lease's quota"}},
)
async def put_manifest(
    lease_id: LeasePath,
    epoch: EpochPath,
    request: Request,
    context: Context,
    signed: NodeRequest,
) -> SnapshotObjectReceipt:
    signed.require("snapshot uploads")
    data = await read_limited(request, SNAPSHOT_MANIFEST_MAX_BYTES, "the body")
    return await run_in_threadpool(
        _put_object, context, lease_id, keys_relay.MANIFEST, str(epoch), data, signed
    )


@router.get(
    "/leases/{lease_id}/snapshots/manifests/{epoch}",
    response_class=Response,
    summary="The sealed snapshot manifest of an epoch, for the lease's node",
    responses={**_ERRORS, 200: {"content": _OCTETS}},
)
async def get_manifest(
    lease_id: LeasePath,
    epoch: EpochPath,
    context: Context,
    signed: NodeRequest,
) -> Response:
    data = await run_in_threadpool(
        _get_object, context, lease_id, keys_relay.MANIFEST, str(epoch), signed
    )
    return Response(data, media_type="application/octet-stream")


@router.get(
    "/leases/{lease_id}/snapshots/latest",
    response_model=SnapshotLatestView,
    summary="The snapshot the lease's highest epoch record names, for its node",
    responses=_ERRORS,
)
def get_latest_snapshot(
    lease_id: LeasePath,
    context: Context,
    session: DbSession,
    signed: NodeRequest,
) -> SnapshotLatestView:
    lease = signed.read(session, lease_id, "snapshots")
    return keys_relay.latest_snapshot(session, lease)


__all__ = ["authorized_holder", "router"]
