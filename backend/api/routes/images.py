"""`/v1/images`: guest images by content address (see backend.domain.images).

Reads are public on purpose: an image is not secret (the measurement a lease expects of it
is on chain) and every reader checks the files against the id. Publishing needs a renter
session; the body (a tar, up to `image_max_bytes`) is unpacked as it streams in, each raw
header checked before what it announces is read (see `backend.domain.image_archive`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from backend.api.deps import Context, DbSession, Renter
from backend.api.errors import ApiError
from backend.domain import images
from cvm.api_models import ImageManifest
from cvm.images import ALL_IMAGE_FILES

router = APIRouter(prefix="/images", tags=["images"])

ImagePath = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="image id: 64 lower-case hex digits")
]
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
# The body is a tar; declared as plain octets, which every client and tool can send.
_TAR = {
    "application/octet-stream": {
        "schema": {"type": "string", "format": "binary", "description": "an uncompressed tar"}
    }
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such image"}}


@router.get(
    "/{image_id}",
    response_model=ImageManifest,
    summary="An image's files with their SHA-256 and size, and its command line (public)",
    responses=_NOT_FOUND,
)
def get_manifest(image_id: ImagePath, context: Context) -> ImageManifest:
    return images.manifest(context.images, image_id)


@router.get(
    "/{image_id}/{component}",
    response_class=FileResponse,
    summary=f"One file of an image ({', '.join(ALL_IMAGE_FILES)}), streamed (public; check its"
    " SHA-256 against the manifest and the id)",
    responses={200: {"content": _OCTETS}, **_NOT_FOUND},
)
def get_component(image_id: ImagePath, component: str, context: Context) -> FileResponse:
    path = images.component_file(context.images, image_id, component)
    return FileResponse(path, media_type="application/octet-stream")


@router.put(
    "/{image_id}",
    status_code=201,
    response_model=ImageManifest,
    summary="Publish an image (an uncompressed tar of vmlinuz, initrd.cpio, manifest.json) as"
    " a signed-in renter; stored only if its files hash to IMAGE_ID (idempotent)",
    openapi_extra={"requestBody": {"required": True, "content": _TAR}},
    responses={
        401: {"description": "not signed in"},
        413: {
            "description": "larger than the image limit or the renter's image quota, or a tar"
            " header larger than allowed"
        },
        422: {
            "description": "not an image archive of three plain files, or its files are another"
            " image"
        },
        429: {"description": "too many uploads from this renter or client"},
        507: {"description": "the image store is full (CVM_IMAGE_STORE_MAX_BYTES)"},
    },
)
async def put_image(
    image_id: ImagePath, request: Request, context: Context, renter: Renter, session: DbSession
) -> ImageManifest:
    # The sign-in check is this request's only use of its session: end its transaction now,
    # or (on SQLite) it would hold the store's write lock for the whole upload.
    await run_in_threadpool(session.commit)
    await run_in_threadpool(context.limit_address, renter, "images")
    settings = context.settings
    limits = images.UploadLimits(
        image_bytes=settings.image_max_bytes,
        store_bytes=settings.image_store_max_bytes,
        renter_bytes=settings.image_renter_quota_bytes,
    )
    upload = await run_in_threadpool(
        images.Upload, context.images, context.store, image_id, renter, limits, context.clock
    )
    try:
        received = 0
        pending = bytearray()
        try:
            async for chunk in request.stream():
                received += len(chunk)
                pending += chunk
                # Unpacked in batches off the event loop; the first batch at once, so a bad
                # header is refused before the rest of the body is waited for.
                if len(pending) >= _BATCH_BYTES or received == len(chunk):
                    await run_in_threadpool(upload.feed, bytes(pending))
                    pending.clear()
        except ClientDisconnect:
            raise ApiError(400, "the client went away during the upload") from None
        if received == 0:
            raise ApiError(422, "empty body: send the image as a tar (`cvm image push`)")
        if pending:
            await run_in_threadpool(upload.feed, bytes(pending))
        return await run_in_threadpool(upload.finish)
    finally:
        await run_in_threadpool(upload.close)


# At most this much of an upload is held in memory between two writes.
_BATCH_BYTES = 1 << 20
