"""The holder's key file (owner-only, never overwritten, never shown) and its signed requests
to the backend (domain tag cvm.holder-read.v1: bound to method, path, body, deployment and a
single-use nonce; the client's requests verify with the same function the backend uses)."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest
from eth_account import Account
from typer.testing import CliRunner

from cvm.api_client import ApiClient
from cvm.eip712 import Domain, SignatureError
from cvm.holder_auth import HOLDER_HEADER, sign_holder_request, verify_holder_request
from keyservice.cli import app
from keyservice.keys import HolderKeys, KeyFileError

DOMAIN = Domain(chain_id=31337, node_registry="0x" + "34" * 20)
NOW = 1_800_000_000


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


def test_a_signed_request_verifies_for_exactly_itself():
    holder = Account.create()
    path = f"/v1/keyholders/{holder.address}/shares?after=3"
    headers = sign_holder_request(holder.key, DOMAIN, "GET", path, now=NOW)
    check = {"now": NOW, "window_s": 60}
    request = verify_holder_request(headers, DOMAIN, "GET", path, b"", **check)
    assert request.holder == holder.address
    for method, other_path, body, domain in [
        ("POST", path, b"", DOMAIN),
        ("GET", path.replace("after=3", "after=0"), b"", DOMAIN),
        ("GET", path, b"x", DOMAIN),
        ("GET", path, b"", Domain(chain_id=1, node_registry=DOMAIN.node_registry)),
        ("GET", path, b"", Domain(chain_id=31337, node_registry="0x" + "35" * 20)),
    ]:
        with pytest.raises(SignatureError, match="signed by"):
            verify_holder_request(headers, domain, method, other_path, body, **check)
    with pytest.raises(SignatureError, match="window"):
        verify_holder_request(headers, DOMAIN, "GET", path, b"", now=NOW + 61, window_s=60)
    forged = headers | {HOLDER_HEADER: Account.create().address}
    with pytest.raises(SignatureError, match="signed by"):
        verify_holder_request(forged, DOMAIN, "GET", path, b"", **check)
    for missing in list(headers):
        partial = {k: v for k, v in headers.items() if k != missing}
        with pytest.raises(SignatureError, match="needs the"):
            verify_holder_request(partial, DOMAIN, "GET", path, b"", **check)


def test_a_holder_signature_is_not_a_node_signature():
    """The tag separates the roles: the digest a holder signs is no EIP-712 node message."""
    from cvm.eip712 import LeaseSpecRequest, recover_node_signer

    holder = Account.create()
    headers = sign_holder_request(holder.key, DOMAIN, "GET", "/v1/leases/1/spec", now=NOW,
                                  nonce=5)  # fmt: skip
    request = LeaseSpecRequest(node=holder.address, lease_id=1, timestamp=NOW, nonce=5)
    signer = recover_node_signer(request, headers["X-CVM-Signature"], DOMAIN)
    assert signer != holder.address


def test_the_api_client_signs_what_it_sends():
    """The client's holder requests verify with the backend's check (same bytes, path, query)."""
    holder = Account.create()
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.raw_path.decode()
        verify_holder_request(dict(request.headers), DOMAIN, request.method, path,
                              request.content, now=int(request.headers["X-CVM-Timestamp"]),
                              window_s=60)  # fmt: skip
        if request.method == "POST":
            return httpx.Response(201, json={"ok": True})
        return httpx.Response(200, json=[{"cursor": 4}])

    api = ApiClient("http://backend.test", transport=httpx.MockTransport(answer))
    assert api.holder_shares(holder.address, after=3, holder_key=holder.key, domain=DOMAIN) == [
        {"cursor": 4}
    ]
    api.holder_epochs(holder.address, after=0, holder_key=holder.key, domain=DOMAIN)
    api.post_key_release(9, {"holder": holder.address, "key_version": 1},
                         holder_key=holder.key, domain=DOMAIN)  # fmt: skip
    assert [r.url.raw_path.decode() for r in seen] == [
        f"/v1/keyholders/{holder.address}/shares?after=3",
        f"/v1/keyholders/{holder.address}/epochs?after=0",
        "/v1/leases/9/key-releases",
    ]
    nonces = {r.headers["X-CVM-Nonce"] for r in seen}
    assert len(nonces) == 3  # a fresh nonce for each request
