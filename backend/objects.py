"""The backend's object store for snapshot ciphertext (issue 20): content-addressed blobs in
namespaces (one per lease).

Two implementations behind `ObjectStore`:
- `FileObjectStore` (default): files under `<data_dir>/objects/<namespace>/<sha[:2]>/<sha>`,
  written to a temporary file in the same directory, flushed and renamed into place, so a
  reader sees a whole object or none;
- `S3ObjectStore`: any S3-compatible endpoint through boto3, when `CVM_OBJECT_STORE_URL` is
  set (bucket `CVM_OBJECT_STORE_BUCKET`, region `CVM_OBJECT_STORE_REGION`). Its credentials
  come from the environment only (`CVM_OBJECT_STORE_ACCESS_KEY`, `CVM_OBJECT_STORE_SECRET_KEY`;
  else boto3's own chain: AWS_* variables, instance roles): never from a settings file, never in
  a log line or an error message.

Every object is addressed by the SHA-256 of its bytes: `put` refuses bytes that do not hash to
the id given, `get` re-hashes what it read and refuses a mismatch (a disk or a bucket that
changed a byte cannot hand out something else under the same id).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from cvm.config import Settings

ACCESS_KEY_ENV = "CVM_OBJECT_STORE_ACCESS_KEY"
SECRET_KEY_ENV = "CVM_OBJECT_STORE_SECRET_KEY"  # noqa: S105 (a variable's name, not a secret)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class ObjectStoreError(Exception):
    """The object store failed (unreachable, refused, out of space)."""


class ObjectNotFound(ObjectStoreError):
    """No object with that id in that namespace."""


class ObjectCorrupt(ObjectStoreError):
    """Bytes that do not hash to their id (sent so, or changed at rest)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(namespace: str, object_id: str) -> None:
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"bad object namespace {namespace!r}")
    if not _SHA256.fullmatch(object_id):
        raise ValueError(f"bad object id {object_id!r}: lower-case SHA-256 hex")


class ObjectStore(Protocol):
    """Content-addressed blobs, by namespace."""

    def put(self, namespace: str, object_id: str, data: bytes) -> None:
        """Store `data` as `object_id` (its SHA-256); `ObjectCorrupt` if it is not; idempotent."""

    def get(self, namespace: str, object_id: str) -> bytes:
        """The bytes of `object_id`; `ObjectNotFound`, or `ObjectCorrupt` if they changed."""

    def delete(self, namespace: str, object_id: str) -> None:
        """Remove one object (no error if absent)."""

    def delete_namespace(self, namespace: str) -> None:
        """Remove every object of `namespace` (no error if none)."""


class FileObjectStore:
    """Objects as files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, namespace: str, object_id: str) -> Path:
        _check(namespace, object_id)
        return self.root / namespace / object_id[:2] / object_id

    def put(self, namespace: str, object_id: str, data: bytes) -> None:
        path = self._path(namespace, object_id)
        if sha256_hex(data) != object_id:
            raise ObjectCorrupt(f"the bytes do not hash to {object_id}")
        if path.is_file():
            return  # the same id is the same bytes
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temporary = tempfile.mkstemp(prefix=".put-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ObjectStoreError(f"cannot write object {object_id}: {exc.strerror}") from None

    def get(self, namespace: str, object_id: str) -> bytes:
        path = self._path(namespace, object_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"object {object_id}") from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read object {object_id}: {exc.strerror}") from None
        if sha256_hex(data) != object_id:
            raise ObjectCorrupt(f"object {object_id} changed at rest")
        return data

    def delete(self, namespace: str, object_id: str) -> None:
        self._path(namespace, object_id).unlink(missing_ok=True)

    def delete_namespace(self, namespace: str) -> None:
        _check(namespace, "0" * 64)
        shutil.rmtree(self.root / namespace, ignore_errors=True)


class S3ObjectStore:
    """Objects in an S3-compatible bucket, as `<namespace>/<sha256>`."""

    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        *,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        create_bucket: bool = False,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        credentials: dict[str, Any] = {}
        if access_key and secret_key:
            credentials = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                s3={"addressing_style": "path"},
            ),
            **credentials,
        )
        if create_bucket:
            try:
                self._client.head_bucket(Bucket=bucket)
            except Exception:
                self._call("create bucket", lambda: self._client.create_bucket(Bucket=bucket))

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        if not settings.object_store_url:
            raise ValueError("CVM_OBJECT_STORE_URL is not set")
        return cls(
            settings.object_store_url,
            settings.object_store_bucket,
            region=settings.object_store_region,
            access_key=os.environ.get(ACCESS_KEY_ENV),
            secret_key=os.environ.get(SECRET_KEY_ENV),
        )

    def _call(self, what: str, call: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            # The error's code and message only: never the request (its signed headers).
            code = exc.response.get("Error", {}).get("Code", "?")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(what) from None
            raise ObjectStoreError(f"object store refused to {what}: {code}") from None
        except BotoCoreError as exc:
            raise ObjectStoreError(
                f"object store unreachable to {what}: {type(exc).__name__}"
            ) from None

    def put(self, namespace: str, object_id: str, data: bytes) -> None:
        _check(namespace, object_id)
        if sha256_hex(data) != object_id:
            raise ObjectCorrupt(f"the bytes do not hash to {object_id}")
        key = f"{namespace}/{object_id}"
        self._call(
            f"write object {object_id}",
            lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data),
        )

    def get(self, namespace: str, object_id: str) -> bytes:
        _check(namespace, object_id)
        key = f"{namespace}/{object_id}"
        answer = self._call(
            f"read object {object_id}", lambda: self._client.get_object(Bucket=self.bucket, Key=key)
        )
        data = self._call(f"read object {object_id}", lambda: answer["Body"].read())
        if sha256_hex(data) != object_id:
            raise ObjectCorrupt(f"object {object_id} changed at rest")
        return bytes(data)

    def delete(self, namespace: str, object_id: str) -> None:
        _check(namespace, object_id)
        key = f"{namespace}/{object_id}"
        self._call(
            f"delete object {object_id}",
            lambda: self._client.delete_object(Bucket=self.bucket, Key=key),
        )

    def delete_namespace(self, namespace: str) -> None:
        _check(namespace, "0" * 64)
        prefix = f"{namespace}/"
        while True:
            listed = self._call(
                f"list {namespace}",
                lambda: self._client.list_objects_v2(
                    Bucket=self.bucket, Prefix=prefix, MaxKeys=1000
                ),
            )
            keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
            if not keys:
                return
            self._call(
                f"delete {namespace}",
                lambda keys=keys: self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                ),
            )


def object_store(settings: Settings) -> ObjectStore:
    """The store the settings name: S3-compatible when `object_store_url` is set, else files
    under `object_store_dir`."""
    if settings.object_store_url:
        return S3ObjectStore.from_settings(settings)
    return FileObjectStore(settings.object_store_dir)


def lease_namespace(lease_id: int) -> str:
    return f"lease-{lease_id}"
