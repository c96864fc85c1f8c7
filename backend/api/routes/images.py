"""`/v1/images`: guest images by content address (see backend.domain.images).

Reads are public on purpose: an image is not secret (the measurement a lease expects of it
is on chain) and every reader checks the files against the id. Publishing needs a renter
session; the body (a tar, up to `image_max_bytes`) streams to a file inside the image store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from backend.api.deps import Context, Renter
from backend.api.errors import ApiError
from backend.domain import images
from cvm.api_models import ImageManifest
from cvm.images import IMAGE_FILES

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
    summary=f"One file of an image ({', '.join(IMAGE_FILES)}), streamed (public; check its"
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
        413: {"description": "larger than the configured image limit"},
        422: {"description": "not an image archive, or its files are another image"},
        429: {"description": "too many uploads from this renter or client"},
        507: {"description": "the image store is full (CVM_IMAGE_STORE_MAX_BYTES)"},
    },
)
async def put_image(
    image_id: ImagePath, request: Request, context: Context, renter: Renter
) -> ImageManifest:
    await run_in_threadpool(context.limit_address, renter, "images")
    store = context.images
    store.root.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=store.root, prefix=".upload-")
    os.close(handle)
    archive = FilePath(name)
    try:
        await _receive(request, archive, context.settings.image_max_bytes)
        return await run_in_threadpool(
            images.publish, store, image_id, archive, context.settings.image_store_max_bytes
        )
    finally:
        archive.unlink(missing_ok=True)


async def _receive(request: Request, target: FilePath, limit: int) -> None:
    """The request body into `target`, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the image is {declared} bytes; the limit is {limit}")
    received = 0
    try:
        async with await anyio.open_file(target, "wb") as sink:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise ApiError(413, f"the image exceeds the limit of {limit} bytes")
                await sink.write(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client went away during the upload") from None
    if received == 0:
        raise ApiError(422, "empty body: send the image as a tar (`cvm image push`)")
