"""Keystore wallets: created, imported, listed and unlocked; keys never leak into errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from cvm.wallet import (
    WalletError,
    create_keystore,
    import_keystore,
    list_keystores,
    load_account,
    read_keystore_info,
    read_password_file,
    resolve_password,
)

FAST = {"kdf": "pbkdf2", "iterations": 2}  # cheap work factor: tests only


def test_create_then_load(tmp_path: Path) -> None:
    info = create_keystore(tmp_path / "node.json", "pw", **FAST)  # type: ignore[arg-type]
    assert (tmp_path / "node.json").stat().st_mode & 0o077 == 0
    assert read_keystore_info(tmp_path / "node.json").address == info.address
    assert load_account(tmp_path / "node.json", "pw").address == info.address


def test_wrong_password_is_refused(tmp_path: Path) -> None:
    create_keystore(tmp_path / "node.json", "pw", **FAST)  # type: ignore[arg-type]
    with pytest.raises(WalletError, match="wrong password"):
        load_account(tmp_path / "node.json", "not-pw")


def test_import_keeps_the_key_and_never_overwrites(tmp_path: Path) -> None:
    key = Account.create().key
    info = import_keystore(tmp_path / "k.json", key, "pw", **FAST)  # type: ignore[arg-type]
    assert load_account(tmp_path / "k.json", "pw").key == key
    assert info.address == Account.from_key(key).address
    with pytest.raises(WalletError, match="refusing to overwrite"):
        import_keystore(tmp_path / "k.json", key, "pw", **FAST)  # type: ignore[arg-type]


def test_invalid_key_error_does_not_echo_the_key(tmp_path: Path) -> None:
    secret = "0x" + "ff" * 32  # above the curve order: invalid
    with pytest.raises(WalletError) as caught:
        import_keystore(tmp_path / "k.json", secret, "pw", **FAST)  # type: ignore[arg-type]
    assert "ff" * 8 not in str(caught.value) and caught.value.__cause__ is None


def test_empty_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match="empty password"):
        create_keystore(tmp_path / "k.json", "", **FAST)  # type: ignore[arg-type]


def test_list_skips_non_keystores(tmp_path: Path) -> None:
    a = create_keystore(tmp_path / "a.json", "pw", **FAST)  # type: ignore[arg-type]
    (tmp_path / "notes.txt").write_text("hello")
    b = create_keystore(tmp_path / "b.json", "pw", **FAST)  # type: ignore[arg-type]
    assert [i.address for i in list_keystores(tmp_path)] == [a.address, b.address]
    assert list_keystores(tmp_path / "absent") == []


def test_password_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("secret\n")
    path.chmod(0o644)
    with pytest.raises(WalletError, match="readable by others"):
        read_password_file(path)
    path.chmod(0o600)
    assert read_password_file(path) == "secret"


def test_resolve_password_prompts_and_confirms() -> None:
    answers = iter(["one", "two"])
    with pytest.raises(WalletError, match="differ"):
        resolve_password(None, lambda _: next(answers), confirm=True)
    assert resolve_password(None, lambda _: "same", confirm=True) == "same"
