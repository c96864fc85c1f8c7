"""A small typed HTTP client of the backend's `/v1` API, used by node agents and the CLI.

Every failure (a 4xx/5xx answer, a refused connection, a malformed body) raises `ApiError`
with the HTTP status code (0 when there was no answer) and the server's message.

No answer is trusted to be small: each is read up to `max_response_bytes` (an event of a
stream up to `MAX_EVENT_BYTES`, an error body up to `MAX_ERROR_BYTES`) and refused beyond,
so a hostile or broken backend that streams without end costs bounded memory.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak
from pydantic import BaseModel, ValidationError

from cvm.api_models import (
    NODE_HEADER,
    NONCE_HEADER,
    OFFSET_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AttestationView,
    ChainInfo,
    ChallengeRequestView,
    ConsoleReceipt,
    EpochRecordIn,
    EpochRecordView,
    EvidenceReceipt,
    GuestAccessIn,
    GuestAccessView,
    GuestKeyClaimView,
    GuestKeysView,
    GuestPort,
    GuestStatusIn,
    GuestStatusView,
    ImageManifest,
    KeyDepositIn,
    KeyDepositView,
    KeyReleaseIn,
    KeyReleaseView,
    KeyShareView,
    LeaseConsoleView,
    LeaseState,
    LeaseTimeline,
    LeaseView,
    NodeView,
    PrivateSpec,
    ReservationKeepaliveView,
    SealedSecretsIn,
    SealedSecretsView,
    SealedSeqView,
    Session,
    SnapshotLatestView,
    SnapshotObjectReceipt,
)
from cvm.eip712 import (
    ConsoleUpload,
    Domain,
    EvidenceUpload,
    LeaseSpecRequest,
    SignedHeartbeat,
    sign_node_message,
)

_M = TypeVar("_M", bound=BaseModel)

# The largest legitimate answers are a thousand nodes and a guest console's 256 KiB tail
# (each control byte JSON-escaped to six): far below this.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024  # one line of a Server-Sent Events stream
MAX_ERROR_BYTES = 64 * 1024  # an error's body (its message is cut shorter still)
MAX_MESSAGE_CHARS = 500


class ApiError(Exception):
    """The backend refused a request or could not be reached (`status_code` 0)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}" if status_code else message)
        self.status_code = status_code
        self.message = message


class ApiClient:
    """Synchronous client; `token` is a SIWE session token (see `login`)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/v1", timeout=timeout_s, transport=transport
        )
        self.token = token
        self.max_response_bytes = max_response_bytes

    @property
    def base_url(self) -> str:
        """The backend's URL as given (without `/v1`)."""
        return str(self._http.base_url).rstrip("/").removesuffix("/v1")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- chain and nodes -------------------------------------------------------------

    def chain_info(self) -> ChainInfo:
        """Chain id and contract addresses the backend follows (the EIP-712 domain)."""
        return _model(ChainInfo, self._json("GET", "/chain"))

    def domain(self) -> Domain:
        info = self.chain_info()
        return Domain(chain_id=info.chain_id, node_registry=info.node_registry)

    def list_nodes(
        self,
        *,
        tee_type: int | None = None,
        min_vcpus: int | None = None,
        min_memory_mib: int | None = None,
        max_price_per_vcpu_second: int | None = None,
        active: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[NodeView]:
        params = _params(
            tee_type=tee_type,
            min_vcpus=min_vcpus,
            min_memory_mib=min_memory_mib,
            max_price_per_vcpu_second=max_price_per_vcpu_second,
            active=active,
            limit=limit,
            offset=offset,
        )
        return [_model(NodeView, n) for n in self._json("GET", "/nodes", params=params)]

    def get_node(self, address: str) -> NodeView:
        return _model(NodeView, self._json("GET", f"/nodes/{address}"))

    def send_heartbeat(self, signed: SignedHeartbeat) -> None:
        """Report free capacity, signed by the node key (see `cvm.eip712.sign_heartbeat`)."""
        self._json("POST", f"/nodes/{signed.heartbeat.node}/heartbeats", json=signed.to_json())

    # --- leases ------------------------------------------------------------------------

    def list_leases(
        self,
        *,
        renter: str | None = None,
        node: str | None = None,
        status: LeaseState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[LeaseView]:
        params = _params(renter=renter, node=node, status=status, limit=limit, offset=offset)
        return [_model(LeaseView, x) for x in self._json("GET", "/leases", params=params)]

    def get_lease(self, lease_id: int) -> LeaseView:
        return _model(LeaseView, self._json("GET", f"/leases/{lease_id}"))

    def create_lease_intent(
        self, *, image: str, ssh_public_key: str | None = None, cloud_init: str | None = None
    ) -> PrivateSpec:
        """Store the private spec (needs a session); its `spec_hash` goes into createLease."""
        # Sent as given: the server validates it (`LeaseIntent`) and answers a 422 if wrong.
        body = {"image": image, "ssh_public_key": ssh_public_key, "cloud_init": cloud_init}
        return _model(PrivateSpec, self._json("POST", "/leases/intents", json=body))

    def lease_spec(self, lease_id: int) -> PrivateSpec:
        """The private spec of a lease, as its renter (needs a session)."""
        return _model(PrivateSpec, self._json("GET", f"/leases/{lease_id}/spec"))

    def lease_spec_as_node(
        self, lease_id: int, *, node_key: bytes | str, domain: Domain | None = None
    ) -> PrivateSpec:
        """The private spec of a lease, as the node it was matched to (signed by the node key)."""
        domain = domain or self.domain()
        node = Account.from_key(node_key).address
        request = LeaseSpecRequest(
            node=node,
            lease_id=lease_id,
            timestamp=int(time.time()),
            nonce=secrets.randbits(63),  # single use: the backend refuses a replayed request
        )
        headers = {
            NODE_HEADER: node,
            TIMESTAMP_HEADER: str(request.timestamp),
            NONCE_HEADER: str(request.nonce),
            SIGNATURE_HEADER: sign_node_message(request, domain, node_key),
        }
        spec = self._json("GET", f"/leases/{lease_id}/spec", headers=headers)
        return _model(PrivateSpec, spec)

    def put_sealed_secrets(self, lease_id: int, sealed: SealedSecretsIn) -> SealedSecretsView:
        """Queue secrets sealed to the lease's guest, as its renter (needs a session)."""
        body = self._json(
            "POST", f"/leases/{lease_id}/secrets", json=sealed.model_dump(mode="json")
        )
        return _model(SealedSecretsView, body)

    def sealed_secrets_seq(self, lease_id: int) -> int:
        """The highest seq the backend holds for the lease's sealed messages (0: none), as its
        renter. A hint only: the guest enforces the order."""
        body = self._json("GET", f"/leases/{lease_id}/secrets/seq")
        return _model(SealedSeqView, body).seq

    def _node_request_headers(
        self, lease_id: int, node_key: bytes | str, domain: Domain | None
    ) -> dict[str, str]:
        """Headers of a request signed by the node key (EIP-712 LeaseSpecRequest, one-time
        nonce), as the backend's node-signed lease routes want them."""
        domain = domain or self.domain()
        node = Account.from_key(node_key).address
        request = LeaseSpecRequest(
            node=node, lease_id=lease_id, timestamp=int(time.time()), nonce=secrets.randbits(63)
        )
        return {
            NODE_HEADER: node,
            TIMESTAMP_HEADER: str(request.timestamp),
            NONCE_HEADER: str(request.nonce),
            SIGNATURE_HEADER: sign_node_message(request, domain, node_key),
        }

    def sealed_secrets_as_node(
        self, lease_id: int, *, node_key: bytes | str, domain: Domain | None = None
    ) -> list[SealedSecretsView]:
        """The lease's sealed secrets, as the node it runs on (signed by the node key)."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        body = self._json("GET", f"/leases/{lease_id}/secrets", headers=headers)
        return [_model(SealedSecretsView, item) for item in body]

    def put_guest_status(
        self,
        lease_id: int,
        seq: int,
        signature: str,
        *,
        node_key: bytes | str,
        domain: Domain | None = None,
    ) -> GuestStatusView:
        """Relay the guest's signed status (challenge zero), as the node the lease runs on."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        body = GuestStatusIn(seq=seq, signature=signature)
        answer = self._json(
            "PUT", f"/leases/{lease_id}/guest-status", json=body.model_dump(), headers=headers
        )
        return _model(GuestStatusView, answer)

    def guest_status(self, lease_id: int) -> GuestStatusView:
        """The guest's signed status as its node relayed it, as the lease's renter. Untrusted
        until checked (cvm.attestation.release.verify_status)."""
        return _model(GuestStatusView, self._json("GET", f"/leases/{lease_id}/guest-status"))

    def announce_guest_access(
        self,
        lease_id: int,
        host: str,
        ssh_port: int,
        *,
        node_key: bytes | str,
        ports: Sequence[tuple[int, int]] = (),
    ) -> GuestAccessView:
        """Tell the backend where the lease's guest serves SSH and its service ports ((guest
        port, host port) pairs), signed by the node key."""
        from cvm.guest_access import GuestAccess

        node = Account.from_key(node_key).address
        forwards = tuple(sorted((int(inside), int(outside)) for inside, outside in ports))
        access = GuestAccess(node, lease_id, host, ssh_port, forwards, int(time.time()))
        body = GuestAccessIn(
            host=host,
            ssh_port=ssh_port,
            ports=[GuestPort(guest_port=g, host_port=h) for g, h in forwards],
            timestamp=access.timestamp,
            signature=sign_node_message(access, self.domain(), node_key),
        )
        answer = self._json(
            "PUT",
            f"/leases/{lease_id}/access",
            json=body.model_dump(mode="json"),
            headers={NODE_HEADER: node},
        )
        return _model(GuestAccessView, answer)

    def guest_access(self, lease_id: int) -> GuestAccessView:
        """Where the lease's guest serves SSH, as its renter (needs a session)."""
        return _model(GuestAccessView, self._json("GET", f"/leases/{lease_id}/access"))

    def follow_timeline(self, lease_id: int, *, deadline: float) -> Iterator[LeaseTimeline | None]:
        """The lease's timeline each time the backend pushes a change (Server-Sent Events
        from `/leases/{id}/timeline/stream`), the current one first, until `deadline`
        (`time.monotonic()`), and the last one again on each keep-alive (every 15 s); None
        while the backend has not indexed the lease yet.
        Reconnects after a dropped connection; `ApiError` if the stream cannot be opened.
        """
        path = f"/leases/{lease_id}/timeline/stream"
        while time.monotonic() < deadline:
            # The server sends a keep-alive every 15 s: a longer silence is a dead link.
            wait = httpx.Timeout(10.0, read=min(20.0, max(0.1, deadline - time.monotonic())))
            try:
                with self._http.stream("GET", path, timeout=wait) as response:
                    if response.is_error:
                        raise ApiError(response.status_code, _error_of(response, path))
                    event = ""
                    last: LeaseTimeline | None = None
                    for line in _lines(response, f"GET {path}"):
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "timeline":
                            body = json.loads(line[5:])
                            last = None if body is None else _model(LeaseTimeline, body)
                            yield last
                        elif line.startswith(": keep-alive"):
                            # The backend indexes behind the chain (confirmations): a quiet
                            # stream still lets the caller look at the chain now and then.
                            yield last
                        if time.monotonic() >= deadline:
                            return
            except httpx.ReadTimeout:
                continue  # nothing pushed before the deadline (or a silent link): check again
            except (httpx.HTTPError, ValueError) as exc:
                raise ApiError(0, f"GET {path}: {exc}") from exc

    def attestation_status(self, lease_id: int) -> AttestationView:
        """Attestation state of a lease and the backend's full verification result."""
        return _model(AttestationView, self._json("GET", f"/leases/{lease_id}/attestation"))

    # --- evidence ------------------------------------------------------------------------

    def upload_evidence(
        self, bundle: bytes, *, node_key: bytes | str, domain: Domain | None = None
    ) -> str:
        """Store canonical evidence bytes, signed by the lease's node key; returns its hash
        (`0x` keccak256 of the bytes)."""
        return self.upload_evidence_receipt(bundle, node_key=node_key, domain=domain).hash

    def upload_evidence_receipt(
        self, bundle: bytes, *, node_key: bytes | str, domain: Domain | None = None
    ) -> EvidenceReceipt:
        from cvm.attestation.evidence import EvidenceBundle

        domain = domain or self.domain()
        node = Account.from_key(node_key).address
        from cvm.attestation.errors import AttestationError

        try:
            parsed = EvidenceBundle.decode(bundle)
        except AttestationError as exc:
            raise ApiError(422, f"not canonical evidence: {exc}") from exc
        upload = EvidenceUpload(
            node=node,
            lease_id=parsed.lease_id,
            nonce=parsed.nonce,
            evidence_hash=bytes(keccak(bundle)),
            timestamp=int(time.time()),
        )
        body = self._json(
            "POST",
            "/evidence",
            content=bundle,
            headers={
                "Content-Type": "application/octet-stream",
                NODE_HEADER: node,
                TIMESTAMP_HEADER: str(upload.timestamp),
                SIGNATURE_HEADER: sign_node_message(upload, domain, node_key),
            },
        )
        return _model(EvidenceReceipt, body)

    def get_evidence(self, evidence_hash: str) -> bytes:
        """The evidence bytes, by evidence hash or by the report hash recorded on chain."""
        return self._request("GET", f"/evidence/{evidence_hash}")

    def guest_key_claim(self, key_hash: str, *, lease_id: int) -> GuestKeyClaimView | None:
        """Another lease's claim on the guest key hashing to `key_hash` (`0x` SHA-256) that a
        report of `lease_id` with that key would lose to; None when the key is free for it.
        Any other failure (the backend unreachable above all) raises `ApiError`: the caller
        cannot tell whether the key is free."""
        try:
            body = self._json("GET", f"/guest-keys/{key_hash}/claim", params={"lease_id": lease_id})
        except ApiError as exc:
            # Only the route's own "no claim" is an answer: a backend without the route (its
            # 404 says "Not Found") must not read as "free".
            if exc.status_code == 404 and "claim on guest key" in exc.message:
                return None
            raise
        return _model(GuestKeyClaimView, body)

    # --- guest images --------------------------------------------------------------------

    def image_manifest(self, image_id: str) -> ImageManifest:
        """The backend's manifest of an image (404 if it has none); public."""
        return _model(ImageManifest, self._json("GET", f"/images/{image_id}"))

    def image_component(self, image_id: str, name: str) -> Iterator[bytes]:
        """The bytes of one file of an image, streamed as they arrive (unchecked: the caller
        hashes them against the id it asked for)."""
        path = f"/images/{image_id}/{name}"
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    raise ApiError(response.status_code, _error_of(response, path))
                # Not capped here: the caller stops at the size the image's manifest declares.
                yield from response.iter_bytes(1 << 20)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"GET {path}: {exc}") from exc

    def upload_image(
        self,
        image_id: str,
        archive: Path,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImageManifest:
        """Publish an image (a `cvm.images.write_archive` tar in `archive`) under its id,
        as a signed-in renter; `progress(sent, total)` after each chunk."""
        total = archive.stat().st_size

        def chunks() -> Iterator[bytes]:
            sent = 0
            with archive.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent, total)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(total)}
        body = self._json("PUT", f"/images/{image_id}", content=chunks(), headers=headers)
        return _model(ImageManifest, body)

    # --- guest console ---------------------------------------------------------------------

    def upload_console(
        self,
        lease_id: int,
        offset: int,
        chunk: bytes,
        *,
        node_key: bytes | str,
        domain: Domain | None = None,
    ) -> ConsoleReceipt:
        """Ship console bytes that start at stream `offset`, signed by the lease's node key."""
        domain = domain or self.domain()
        node = Account.from_key(node_key).address
        upload = ConsoleUpload(
            node=node,
            lease_id=lease_id,
            offset=offset,
            chunk_hash=bytes(keccak(chunk)),
            timestamp=int(time.time()),
            nonce=secrets.randbits(63),  # single use: the backend refuses a replayed upload
        )
        headers = {
            "Content-Type": "application/octet-stream",
            NODE_HEADER: node,
            TIMESTAMP_HEADER: str(upload.timestamp),
            NONCE_HEADER: str(upload.nonce),
            OFFSET_HEADER: str(offset),
            SIGNATURE_HEADER: sign_node_message(upload, domain, node_key),
        }
        body = self._json("POST", f"/leases/{lease_id}/console", content=chunk, headers=headers)
        return _model(ConsoleReceipt, body)

    def lease_console(self, lease_id: int, *, since: int = 0) -> LeaseConsoleView:
        """The tail of the lease's guest console from stream position `since`, as its renter
        (needs a session). Untrusted: the node's host relayed every byte."""
        body = self._json("GET", f"/leases/{lease_id}/logs", params={"since": since})
        return _model(LeaseConsoleView, body)

    # --- key service and snapshots (issue 20) ----------------------------------------------
    # Renter: put_keys. Key holder (requests signed by its Ethereum key, cvm.holder_requests):
    # list_shares, post_release, list_epochs. The lease's node (signed like its spec read):
    # get_guest_keys, post_epoch, put/get_chunk, put/get_manifest, latest_snapshot. Public:
    # latest_epoch. Everything carried is ciphertext or signed by the lease's own keys.

    def put_keys(self, lease_id: int, deposit: KeyDepositIn) -> KeyDepositView:
        """Deposit the lease's signed key manifest, sealed shares and bundle, as its renter
        (needs a session)."""
        body = self._json("PUT", f"/leases/{lease_id}/keys", json=deposit.model_dump(mode="json"))
        return _model(KeyDepositView, body)

    def _holder_json(
        self,
        method: str,
        path: str,
        holder_key: bytes | str,
        domain: Domain | None,
        body: bytes = b"",
    ) -> Any:
        from cvm.holder_requests import sign_holder_request

        headers = sign_holder_request(holder_key, domain or self.domain(), method, "/v1" + path,
                                      body)  # fmt: skip
        if body:
            headers["Content-Type"] = "application/json"
            return self._json(method, path, content=body, headers=headers)
        return self._json(method, path, headers=headers)

    def list_shares(
        self,
        *,
        holder_key: bytes | str,
        after: int = 0,
        limit: int = 100,
        domain: Domain | None = None,
    ) -> list[KeyShareView]:
        """The key shares sealed to this holder with a cursor above `after`, oldest first."""
        holder = Account.from_key(holder_key).address
        path = f"/keyholders/{holder}/shares?after={int(after)}&limit={int(limit)}"
        return [_model(KeyShareView, x) for x in self._holder_json("GET", path, holder_key, domain)]

    def list_epochs(
        self,
        *,
        holder_key: bytes | str,
        after: int = 0,
        limit: int = 100,
        domain: Domain | None = None,
    ) -> list[EpochRecordView]:
        """The latest epoch record of each lease this holder holds a share of, after a cursor."""
        holder = Account.from_key(holder_key).address
        path = f"/keyholders/{holder}/epochs?after={int(after)}&limit={int(limit)}"
        answer = self._holder_json("GET", path, holder_key, domain)
        return [_model(EpochRecordView, x) for x in answer]

    def post_release(
        self,
        lease_id: int,
        release: KeyReleaseIn,
        *,
        holder_key: bytes | str,
        domain: Domain | None = None,
    ) -> KeyReleaseView:
        """Post this holder's share sealed to the lease's attested guest."""
        body = release.model_dump_json().encode()
        answer = self._holder_json(
            "POST", f"/leases/{lease_id}/key-releases", holder_key, domain, body
        )
        return _model(KeyReleaseView, answer)

    def latest_epoch(self, lease_id: int) -> EpochRecordView | None:
        """The lease's highest epoch record (its `.epoch`), None while it has none; public."""
        try:
            body = self._json("GET", f"/leases/{lease_id}/epochs/latest")
        except ApiError as exc:
            # Only the route's own "no record yet" is an answer (a missing lease is an error).
            if exc.status_code == 404 and "epoch record of lease" in exc.message:
                return None
            raise
        return _model(EpochRecordView, body)

    def get_guest_keys(
        self, lease_id: int, *, node_key: bytes | str, domain: Domain | None = None
    ) -> GuestKeysView:
        """The lease's key manifest, bundle and releases, as the node it runs on."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        body = self._json("GET", f"/leases/{lease_id}/keys/guest", headers=headers)
        return _model(GuestKeysView, body)

    def post_epoch(
        self,
        lease_id: int,
        record: EpochRecordIn,
        *,
        node_key: bytes | str,
        domain: Domain | None = None,
    ) -> EpochRecordView:
        """Relay the guest's epoch record, as the node the lease runs on."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        body = self._json(
            "POST", f"/leases/{lease_id}/epochs", json=record.model_dump(mode="json"),
            headers=headers,
        )  # fmt: skip
        return _model(EpochRecordView, body)

    def keep_reservation_alive(
        self, lease_id: int, *, node_key: bytes | str, domain: Domain | None = None
    ) -> ReservationKeepaliveView:
        """Keep this node's reservation of a lease alive while its guest boots before the
        accept (combined accept), as the node it was matched to."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        body = self._json("POST", f"/leases/{lease_id}/reservation/keepalive", headers=headers)
        return _model(ReservationKeepaliveView, body)

    def request_challenge(
        self, lease_id: int, *, node_key: bytes | str, domain: Domain | None = None
    ) -> ChallengeRequestView:
        """Ask the backend's failover watch to challenge the lease, as its node (its guest was
        relaunched and may attest again only once challenged)."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        body = self._json("POST", f"/leases/{lease_id}/challenge-request", headers=headers)
        return _model(ChallengeRequestView, body)

    def _put_object(
        self, lease_id: int, path: str, data: bytes, node_key: bytes | str, domain: Domain | None
    ) -> SnapshotObjectReceipt:
        headers = self._node_request_headers(lease_id, node_key, domain)
        headers["Content-Type"] = "application/octet-stream"
        body = self._json("PUT", path, content=data, headers=headers)
        return _model(SnapshotObjectReceipt, body)

    def put_chunk(
        self, lease_id: int, data: bytes, *, node_key: bytes | str, domain: Domain | None = None
    ) -> SnapshotObjectReceipt:
        """Store an encrypted snapshot chunk under its SHA-256, as the lease's node."""
        chunk_id = hashlib.sha256(data).hexdigest()
        path = f"/leases/{lease_id}/snapshots/chunks/{chunk_id}"
        return self._put_object(lease_id, path, data, node_key, domain)

    def get_chunk(
        self,
        lease_id: int,
        chunk_id: str,
        *,
        node_key: bytes | str,
        domain: Domain | None = None,
    ) -> bytes:
        """An encrypted snapshot chunk, checked against its id (ApiError if it differs)."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        path = f"/leases/{lease_id}/snapshots/chunks/{chunk_id}"
        data = self._request("GET", path, headers=headers)
        if hashlib.sha256(data).hexdigest() != chunk_id:
            raise ApiError(0, f"GET {path}: the bytes do not hash to {chunk_id}")
        return data

    def put_manifest(
        self,
        lease_id: int,
        epoch: int,
        data: bytes,
        *,
        node_key: bytes | str,
        domain: Domain | None = None,
    ) -> SnapshotObjectReceipt:
        """Store the sealed snapshot manifest of `epoch` (its id: the receipt's `id`)."""
        path = f"/leases/{lease_id}/snapshots/manifests/{int(epoch)}"
        return self._put_object(lease_id, path, data, node_key, domain)

    def get_manifest(
        self,
        lease_id: int,
        epoch: int,
        *,
        node_key: bytes | str,
        domain: Domain | None = None,
    ) -> bytes:
        """The sealed snapshot manifest of `epoch` (the guest authenticates it)."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        return self._request(
            "GET", f"/leases/{lease_id}/snapshots/manifests/{int(epoch)}", headers=headers
        )

    def latest_snapshot(
        self, lease_id: int, *, node_key: bytes | str, domain: Domain | None = None
    ) -> SnapshotLatestView:
        """The snapshot the lease's highest epoch record names (ApiError 404 if none)."""
        headers = self._node_request_headers(lease_id, node_key, domain)
        body = self._json("GET", f"/leases/{lease_id}/snapshots/latest", headers=headers)
        return _model(SnapshotLatestView, body)

    # --- Sign-In with Ethereum ----------------------------------------------------------

    def login(self, private_key: bytes | str, *, statement: str = "Sign in to cvm") -> Session:
        """SIWE (EIP-4361): sign the server's challenge; keeps and returns the session token."""
        account = Account.from_key(private_key)
        challenge = self._json("POST", "/auth/nonce", json={"address": account.address})
        message: str = challenge["message"]
        signature = account.sign_message(encode_defunct(text=message)).signature
        body = {"message": message, "signature": "0x" + bytes(signature).hex()}
        session = _model(Session, self._json("POST", "/auth/login", json=body))
        self.token = session.token
        return session

    # --- plumbing --------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> bytes:
        """The body of a successful answer, read up to `max_response_bytes`."""
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        what = f"{method} {path}"
        try:
            request = self._http.build_request(method, path, headers=headers, **kwargs)
            response = self._http.send(request, stream=True)
            try:
                if response.is_error:
                    raise ApiError(response.status_code, _error_of(response, what))
                return _read_capped(response, self.max_response_bytes, what)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise ApiError(0, f"{what}: {exc}") from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        body = self._request(method, path, **kwargs)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiError(0, f"{method} {path}: body is not JSON") from exc


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The whole body, or ApiError as soon as it is (or says it will be) over `limit` bytes."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(0, f"{what}: the backend's answer is {declared} bytes, over the {limit}")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise ApiError(0, f"{what}: the backend's answer is over {limit} bytes; refused")
    return bytes(body)


def _lines(response: httpx.Response, what: str) -> Iterator[str]:
    """The lines of a stream, refusing one longer than MAX_EVENT_BYTES (an endless line)."""
    pending = b""
    for chunk in response.iter_bytes():
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
        if len(pending) > MAX_EVENT_BYTES:
            raise ApiError(0, f"{what}: an event over {MAX_EVENT_BYTES} bytes; refused")
    if pending:
        yield pending.removesuffix(b"\r").decode("utf-8", "replace")


def _error_of(response: httpx.Response, what: str) -> str:
    """The message of an error answer (its `detail`), its body read up to MAX_ERROR_BYTES."""
    try:
        body = _read_capped(response, MAX_ERROR_BYTES, what)
    except ApiError:
        return f"{response.reason_phrase} (with an error body over {MAX_ERROR_BYTES} bytes)"
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        text = body.decode("utf-8", "replace")
        return text[:200] or response.reason_phrase
    message = detail if isinstance(detail, str) else str(detail)
    return message[:MAX_MESSAGE_CHARS]


def _model(model: type[_M], body: Any) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(0, f"unexpected {model.__name__} from the server: {exc}") from exc


__all__ = ["ApiClient", "ApiError"]
