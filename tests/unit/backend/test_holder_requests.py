"""Holder-signed requests (cvm.holder_requests) and the backend's check of holders on chain
(backend.domain.keys_relay): domain separation, binding of method, path and body, and the
cached chain lookup behind one function (the KeyService bindings' `holder_of`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account import Account

from backend.domain.keys_relay import CachedHolderCheck, chain_holder_check
from cvm import guest_eip712
from cvm.api_models import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from cvm.eip712 import Domain, LeaseSpecRequest, SignatureError, sign_node_message
from cvm.holder_requests import HOLDER_HEADER, sign_holder_request, verify_holder_request

DOMAIN = Domain(chain_id=31337, node_registry="0x" + "11" * 20)
NOW = 1_800_000_000


def _verify(headers: dict[str, str], *, method: str = "POST", path: str = "/v1/x",
            body: bytes = b"{}", domain: Domain = DOMAIN, now: int = NOW) -> str:  # fmt: skip
    request = verify_holder_request(
        headers[HOLDER_HEADER], headers[TIMESTAMP_HEADER], headers[NONCE_HEADER],
        headers[SIGNATURE_HEADER], method=method, path=path, body=body, domain=domain, now=now,
        window_s=120,
    )  # fmt: skip
    return request.holder


def test_a_holder_request_binds_its_signer_deployment_method_path_and_body() -> None:
    holder = Account.create()
    headers = sign_holder_request(holder.key, DOMAIN, "POST", "/v1/x", b"{}", now=NOW)
    assert _verify(headers) == holder.address
    for changed in (
        {"method": "PUT"},
        {"path": "/v1/y"},
        {"body": b"{ }"},
        {"domain": Domain(chain_id=1, node_registry=DOMAIN.node_registry)},
        {"domain": Domain(chain_id=31337, node_registry="0x" + "12" * 20)},
        {"now": NOW + 121},
    ):
        with pytest.raises(SignatureError):
            _verify(headers, **changed)  # type: ignore[arg-type]
    other = Account.create()
    with pytest.raises(SignatureError):
        _verify({**headers, HOLDER_HEADER: other.address})
    with pytest.raises(SignatureError):
        _verify({**headers, SIGNATURE_HEADER: "0x" + "00" * 65})
    with pytest.raises(SignatureError):
        _verify({**headers, NONCE_HEADER: "-1"})


def test_no_other_signature_of_the_same_key_passes_as_a_holder_request() -> None:
    """A node's signed read, or a renter's manifest signature, by the same key: refused."""
    key = Account.create()
    node_read = LeaseSpecRequest(node=key.address, lease_id=1, timestamp=NOW, nonce=5)
    signature = sign_node_message(node_read, DOMAIN, key.key)
    headers = {HOLDER_HEADER: key.address, TIMESTAMP_HEADER: str(NOW), NONCE_HEADER: "5",
               SIGNATURE_HEADER: signature}  # fmt: skip
    with pytest.raises(SignatureError):
        _verify(headers, method="GET", body=b"")
    manifest = {"leaseId": 1, "keyVersion": 1, "threshold": 1, "holders": [key.address],
                "holderKeys": ["0x" + "11" * 32], "rootCommitment": "0x" + "22" * 32,
                "epochKey": "0x" + "33" * 32}  # fmt: skip
    message = guest_eip712.key_manifest_message(31337, DOMAIN.node_registry, manifest)
    headers[SIGNATURE_HEADER] = "0x" + guest_eip712.sign(message, key).hex()
    with pytest.raises(SignatureError):
        _verify(headers, method="GET", body=b"")


def test_key_manifests_refuse_what_their_types_cannot_carry() -> None:
    good = {"leaseId": 1, "keyVersion": 1, "threshold": 2,
            "holders": [Account.create().address for _ in range(3)],
            "holderKeys": ["0x" + "11" * 32] * 3, "rootCommitment": "0x" + "22" * 32,
            "epochKey": "0x" + "33" * 32}  # fmt: skip
    guest_eip712.key_manifest_message(1, "0x" + "33" * 20, good)
    for change in (
        {"threshold": 0},
        {"threshold": 4},
        {"holderKeys": ["0x" + "11" * 32] * 2},
        {"holders": [], "holderKeys": []},
        {"keyVersion": 2**32},
        {"epochKey": "0x" + "33" * 31},
        {"leaseId": -1},
    ):
        with pytest.raises(ValueError):
            guest_eip712.key_manifest_message(1, "0x" + "33" * 20, {**good, **change})
    # Its hash is the digest that is signed (what the key policy stores on chain).
    renter = Account.create()
    message = guest_eip712.key_manifest_message(1, "0x" + "33" * 20, good)
    digest = guest_eip712.key_manifest_hash(1, "0x" + "33" * 20, good)
    assert Account._recover_hash(digest, signature=guest_eip712.sign(message, renter)) == (
        renter.address
    )


@dataclass
class _Info:
    registered: bool
    stake: int


class _FakeKeys:
    """What the KeyService bindings answer (`chain.keys.holder_of`), counting calls."""

    def __init__(self, holders: dict[str, _Info]) -> None:
        self.holders = holders
        self.calls = 0

    def holder_of(self, address: str) -> _Info:
        self.calls += 1
        return self.holders.get(address.lower(), _Info(False, 0))


def test_a_holder_is_registered_and_staked_and_the_answer_is_cached_briefly() -> None:
    staked, unstaked, unknown = (Account.create().address for _ in range(3))
    keys = _FakeKeys({staked.lower(): _Info(True, 10), unstaked.lower(): _Info(True, 0)})
    check = chain_holder_check(keys)
    assert check(staked) and not check(unstaked) and not check(unknown)
    calls = keys.calls
    assert check(staked.lower())  # cached, whatever the address's case
    assert keys.calls == calls
    # Bindings with `is_active_holder` (the minimum stake counted on chain) are asked that.
    active = type("Active", (), {"is_active_holder": lambda self, a: a == staked})()
    assert chain_holder_check(active)(staked) and not chain_holder_check(active)(unstaked)
    now = [0.0]
    answers = {"a": True}
    cached = CachedHolderCheck(lambda a: answers[a], ttl_s=30, max_entries=2, clock=lambda: now[0])
    assert cached("a")
    answers["a"] = False  # the holder unstaked
    assert cached("a")  # still the cached answer within the TTL
    now[0] = 31.0
    assert not cached("a")
