"""The snapshot object store (backend.objects): the same behaviour from the filesystem store
and the S3-compatible one (boto3 against moto's S3 server on a free port): content addressed,
checked on put and on get, namespaces removed whole, credentials never in an error."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.objects import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    FileObjectStore,
    ObjectCorrupt,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    object_store,
)
from cvm.config import Settings
from tests.fixtures.processes import free_port

ACCESS_KEY = "cvm-test-access"
SECRET_KEY = "cvm-test-secret-never-shown"  # moto accepts any


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """moto's S3 server in this process, on a free port, stopped after the module."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["files", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "files":
        return FileObjectStore(tmp_path / "objects")
    url = request.getfixturevalue("s3_url")
    bucket = f"cvm-{os.urandom(4).hex()}"
    return S3ObjectStore(url, bucket, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                         create_bucket=True)  # fmt: skip


def _blob(size: int = 4096) -> tuple[str, bytes]:
    data = os.urandom(size)
    return hashlib.sha256(data).hexdigest(), data


def test_objects_are_addressed_by_their_sha256(objects: ObjectStore) -> None:
    object_id, data = _blob()
    objects.put("lease-1", object_id, data)
    objects.put("lease-1", object_id, data)  # idempotent
    assert objects.get("lease-1", object_id) == data
    with pytest.raises(ObjectNotFound):
        objects.get("lease-2", object_id)  # namespaces are apart
    other_id, _ = _blob()
    with pytest.raises(ObjectCorrupt):
        objects.put("lease-1", other_id, data)  # bytes that are not the id's
    with pytest.raises(ObjectNotFound):
        objects.get("lease-1", other_id)
    for bad in ("../x", "LEASE", ""):
        with pytest.raises(ValueError):
            objects.get(bad, object_id)
    with pytest.raises(ValueError):
        objects.get("lease-1", object_id.upper())


def test_a_namespace_is_removed_whole(objects: ObjectStore) -> None:
    kept_id, kept = _blob()
    objects.put("lease-9", kept_id, kept)
    ids = []
    for _ in range(5):
        object_id, data = _blob(100)
        objects.put("lease-8", object_id, data)
        ids.append(object_id)
    objects.delete("lease-8", ids[0])
    with pytest.raises(ObjectNotFound):
        objects.get("lease-8", ids[0])
    objects.delete_namespace("lease-8")
    for object_id in ids:
        with pytest.raises(ObjectNotFound):
            objects.get("lease-8", object_id)
    objects.delete_namespace("lease-8")  # nothing left: no error
    assert objects.get("lease-9", kept_id) == kept


def test_a_file_changed_at_rest_is_refused_and_writes_are_whole(tmp_path: Path) -> None:
    objects = FileObjectStore(tmp_path / "objects")
    object_id, data = _blob()
    objects.put("lease-1", object_id, data)
    (path,) = [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
    assert path.name == object_id and path.read_bytes() == data
    path.write_bytes(b"x" + data[1:])
    with pytest.raises(ObjectCorrupt):
        objects.get("lease-1", object_id)
    # No temporary file is left beside the objects.
    assert [p.name for p in path.parent.iterdir()] == [object_id]


def test_s3_changed_at_rest_is_refused_and_errors_name_no_secret(s3_url: str) -> None:
    import boto3

    store = S3ObjectStore(s3_url, "cvm-rest", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                          create_bucket=True)  # fmt: skip
    object_id, data = _blob()
    store.put("lease-1", object_id, data)
    raw = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                       aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)  # fmt: skip
    raw.put_object(Bucket="cvm-rest", Key=f"lease-1/{object_id}", Body=b"tampered")
    with pytest.raises(ObjectCorrupt):
        store.get("lease-1", object_id)
    missing = S3ObjectStore(s3_url, "no-such-bucket", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    with pytest.raises(ObjectStoreError) as failed:
        missing.put("lease-1", object_id, data)
    assert SECRET_KEY not in str(failed.value) and ACCESS_KEY not in str(failed.value)
    closed = S3ObjectStore(f"http://127.0.0.1:{free_port()}", "cvm-rest",
                           access_key=ACCESS_KEY, secret_key=SECRET_KEY)  # fmt: skip
    with pytest.raises(ObjectStoreError) as unreachable:
        closed.get("lease-1", object_id)
    assert SECRET_KEY not in str(unreachable.value)


def test_the_settings_choose_the_store_and_keys_come_from_the_environment(
    tmp_path: Path, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = object_store(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    assert isinstance(files, FileObjectStore) and files.root == tmp_path / "objects"
    monkeypatch.setenv(ACCESS_KEY_ENV, ACCESS_KEY)
    monkeypatch.setenv(SECRET_KEY_ENV, SECRET_KEY)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, object_store_url=s3_url, object_store_bucket="cvm-env"
    )
    s3 = object_store(settings)
    assert isinstance(s3, S3ObjectStore)
    S3ObjectStore(s3_url, "cvm-env", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                  create_bucket=True)  # fmt: skip
    object_id, data = _blob()
    s3.put("lease-3", object_id, data)
    assert s3.get("lease-3", object_id) == data
    # The secret is no setting: not in the settings' fields, so never in a dump of them.
    assert SECRET_KEY not in repr(settings) and SECRET_KEY not in settings.model_dump_json()
