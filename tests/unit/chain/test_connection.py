"""The one RPC precedence rule of `cvm.chain.connect`."""

from __future__ import annotations

import re

import pytest

from cvm.chain import ChainUnreachable, Deployment, connect, resolve_rpc_url
from cvm.config import Settings

RECORD = Deployment(
    chain_id=31337,
    deployer="0x" + "11" * 20,
    start_block=0,
    token="0x" + "22" * 20,
    node_registry="0x" + "33" * 20,
    attestation_registry="0x" + "44" * 20,
    lease_market="0x" + "55" * 20,
    attested_service="0x" + "66" * 20,
    rpc_url="http://record:8545",
)


@pytest.fixture(autouse=True)
def _no_rpc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CVM_RPC_URL", raising=False)


def test_explicit_url_wins_over_everything() -> None:
    settings = Settings(rpc_url="http://env:8545")
    assert resolve_rpc_url("http://flag:8545", RECORD, settings) == "http://flag:8545"


def test_a_set_setting_wins_over_the_record() -> None:
    settings = Settings(rpc_url="http://env:8545")
    assert resolve_rpc_url(None, RECORD, settings) == "http://env:8545"


def test_environment_counts_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVM_RPC_URL", "http://from-env:8545")
    assert resolve_rpc_url(None, RECORD) == "http://from-env:8545"


def test_the_record_wins_over_the_default() -> None:
    assert resolve_rpc_url(None, RECORD, Settings()) == "http://record:8545"


def test_the_default_when_nothing_else() -> None:
    without = Deployment(**{**RECORD.__dict__, "rpc_url": None})
    assert resolve_rpc_url(None, without, Settings()) == "http://127.0.0.1:8545"


def test_connect_checks_the_network() -> None:
    with pytest.raises(
        ChainUnreachable, match=re.escape("cannot reach the chain at http://127.0.0.1:9")
    ):
        connect(RECORD, rpc_url="http://127.0.0.1:9")


def test_connect_without_check_does_not_touch_the_network() -> None:
    client = connect(RECORD, rpc_url="http://127.0.0.1:9", check=False)
    assert client.account is None
    assert client.deployment == RECORD
