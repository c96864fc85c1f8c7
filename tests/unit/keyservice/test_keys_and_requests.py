"""The holder's key file (owner-only, never overwritten, never shown) and its way to the
backend (the API client's holder-signed methods, their answers handed on as plain JSON)."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from cvm.eip712 import Domain
from keyservice.cli import app
from keyservice.keys import HolderKeys, KeyFileError

DOMAIN = Domain(chain_id=31337, node_registry="0x" + "34" * 20)


def test_init_makes_an_owner_only_key_file_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "holder.json"
    runner = CliRunner()
    made = runner.invoke(app, ["init", "--key-file", str(path), "--json"])
    assert made.exit_code == 0, made.output
    shown = json.loads(made.stdout)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = HolderKeys.load(path)
    assert shown["address"] == keys.address
    assert shown["x25519_public"] == "0x" + keys.x25519_public.hex()
    assert bytes(keys.account.key).hex() not in made.output
    again = runner.invoke(app, ["init", "--key-file", str(path)])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
    assert HolderKeys.load(path).address == keys.address
    show = runner.invoke(app, ["show", "--key-file", str(path), "--json"])
    assert json.loads(show.stdout)["address"] == keys.address


def test_a_key_file_others_can_read_or_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "holder.json"
    HolderKeys.generate().save_new(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        HolderKeys.load(path)
    other = tmp_path / "other.json"
    fd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"version": 1, "eth_private_key": "secret-ish", "x25519_private_key": "00"}')
    os.close(fd)
    with pytest.raises(KeyFileError) as caught:
        HolderKeys.load(other)
    assert "secret-ish" not in str(caught.value)
    with pytest.raises(KeyFileError, match="keyservice init"):
        HolderKeys.load(tmp_path / "missing.json")
    result = CliRunner().invoke(app, ["show", "--key-file", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output


class Views:
    """The backend client's answers: pydantic views, dumped to JSON for the holder."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def model_dump(self, mode: str) -> dict:
        assert mode == "json"
        return self.items[0]


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def list_shares(self, *, holder_key, after, limit, domain):
        self.calls.append(("shares", holder_key, after, limit, domain))
        return [Views([{"cursor": 5}])]

    def list_epochs(self, *, holder_key, after, limit, domain):
        self.calls.append(("epochs", holder_key, after, limit, domain))
        return []

    def get_evidence(self, evidence_hash: str) -> bytes:
        self.calls.append(("evidence", evidence_hash))
        return b"evidence"

    def post_release(self, lease_id, release, *, holder_key, domain):
        self.calls.append(("release", lease_id, release, holder_key, domain))


def test_the_api_backend_signs_with_the_holder_key_and_hands_on_json(monkeypatch):
    from cvm import api_models
    from keyservice.backend import ApiBackend

    class KeyReleaseIn(dict):  # the backend's model (branch i-backendkeys), stood in
        def __init__(self, **fields):
            super().__init__(fields)

    monkeypatch.setattr(api_models, "KeyReleaseIn", KeyReleaseIn, raising=False)
    api = FakeApi()
    backend = ApiBackend(api, b"k" * 32, DOMAIN)  # type: ignore[arg-type]
    assert backend.shares(4) == [{"cursor": 5}]
    assert backend.epochs(0) == []
    assert backend.evidence(b"\x01" * 32) == b"evidence"
    backend.post_release(9, {"holder": "0x" + "11" * 20, "key_version": 1})
    assert api.calls[0] == ("shares", b"k" * 32, 4, 100, DOMAIN)
    assert api.calls[2] == ("evidence", "0x" + "01" * 32)
    kind, lease, release, key, domain = api.calls[3]
    assert (kind, lease, key, domain) == ("release", 9, b"k" * 32, DOMAIN)
    assert isinstance(release, KeyReleaseIn) and release["key_version"] == 1
