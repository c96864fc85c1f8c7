"""The image build keeps of Debian's pycryptodome only what keccak-256 needs, and drops
ecdsa's own tests: the guest stays small (about 0.4 MB more for the attested signer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest.build import PACKAGES, BuildError, _keep_only_keccak


def _tree(site: Path, files: list[str]) -> None:
    for name in files:
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


def test_only_the_keccak_files_of_pycryptodome_are_kept(tmp_path):
    site = tmp_path / "dist-packages"
    kept = ["Cryptodome/__init__.py", "Cryptodome/Hash/__init__.py", "Cryptodome/Hash/keccak.py",
            "Cryptodome/Hash/_keccak.abi3.so", "Cryptodome/Util/__init__.py",
            "Cryptodome/Util/py3compat.py", "Cryptodome/Util/_raw_api.py",
            "Cryptodome/Util/_file_system.py", "ecdsa/__init__.py", "ecdsa/keys.py"]  # fmt: skip
    dropped = ["Cryptodome/Cipher/AES.py", "Cryptodome/Hash/SHA256.py",
               "Cryptodome/Hash/keccak.pyi", "Cryptodome/SelfTest/Hash/test_keccak.py",
               "Cryptodome/PublicKey/RSA.py", "ecdsa/test_keys.py"]  # fmt: skip
    _tree(site, kept + dropped)
    _keep_only_keccak(site)
    found = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert found == sorted(kept)
    assert not (site / "Cryptodome" / "Cipher").exists()


def test_a_pycryptodome_without_keccak_fails_the_build(tmp_path):
    _tree(tmp_path, ["Cryptodome/__init__.py"])
    with pytest.raises(BuildError, match="keccak"):
        _keep_only_keccak(tmp_path)


def test_the_signer_packages_are_in_the_image():
    assert {"python3-ecdsa", "python3-six", "python3-pycryptodome"} <= set(PACKAGES)
