"""The image build keeps of Debian's pycryptodome only what keccak-256 and Shamir's secret
sharing need, and drops ecdsa's own tests: the guest stays small (about 0.4 MB more for the
attested signer). The built image combines, with its own Python and Debian's pycryptodome,
the shares the renter's client makes with PyPI's pycryptodomex."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from cvm import key_release
from guest.build import PACKAGES, BuildError, _keep_only_keccak
from tests.fixtures.images import guest_image, image_store  # noqa: F401 - fixtures

pytestmark = pytest.mark.guests  # builds the shared guest image


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
            "Cryptodome/Util/_file_system.py", "Cryptodome/Protocol/__init__.py",
            "Cryptodome/Protocol/SecretSharing.py", "Cryptodome/Util/number.py",
            "Cryptodome/Random/__init__.py", "ecdsa/__init__.py", "ecdsa/keys.py"]  # fmt: skip
    dropped = ["Cryptodome/Cipher/AES.py", "Cryptodome/Hash/SHA256.py",
               "Cryptodome/Hash/keccak.pyi", "Cryptodome/SelfTest/Hash/test_keccak.py",
               "Cryptodome/PublicKey/RSA.py", "ecdsa/test_keys.py", "Cryptodome/Protocol/KDF.py",
               "Cryptodome/Protocol/SecretSharing.pyi", "Cryptodome/Random/random.py"]  # fmt: skip
    _tree(site, kept + dropped)
    _keep_only_keccak(site)
    found = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert found == sorted(kept)
    assert not (site / "Cryptodome" / "Cipher").exists()


def test_a_pycryptodome_without_keccak_or_shamir_fails_the_build(tmp_path):
    _tree(tmp_path, ["Cryptodome/__init__.py"])
    with pytest.raises(BuildError, match="keccak"):
        _keep_only_keccak(tmp_path)
    _tree(tmp_path, ["Cryptodome/Hash/keccak.py"])
    with pytest.raises(BuildError, match="SecretSharing"):
        _keep_only_keccak(tmp_path)


def _unpack_newc(archive: Path, root: Path) -> None:
    """The files, directories and symlinks of a newc archive (guest.build.write_cpio's)."""
    data = archive.read_bytes()
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701", "not a newc archive"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name = data[offset + 110 : offset + 110 + name_size - 1].decode()
        offset += 110 + name_size
        offset += -offset % 4
        body = data[offset : offset + size]
        offset += size + (-size % 4)
        if name == "TRAILER!!!":
            return
        target = root / name
        if stat.S_ISDIR(mode):
            target.mkdir(parents=True, exist_ok=True)
        elif stat.S_ISLNK(mode):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(body.decode())
        elif stat.S_ISREG(mode):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            target.chmod(stat.S_IMODE(mode))


def test_the_image_combines_the_clients_shares_with_its_own_python(guest_image, tmp_path):  # noqa: F811
    """pycryptodomex (the client) splits, Debian's pycryptodome in the image combines: the
    same Shamir over GF(2^128). Run with the image's own python3 (chroot into its root)."""
    root = tmp_path / "root"
    _unpack_newc(guest_image.directory / "initrd.cpio", root)
    secret = key_release.new_root()
    shares = key_release.split_root(secret, 2, 3)
    pairs = [(1, shares[0].hex()), (3, shares[2].hex())]
    script = (
        "import sys; sys.path.insert(0, '/usr/lib/cvm')\n"
        "import agent, keyshares\n"
        f"pairs = {pairs!r}\n"
        "root = keyshares.combine([(i, bytes.fromhex(h)) for i, h in pairs])\n"
        "print(root.hex(), keyshares.derive(root).commitment.hex())\n"
    )
    done = subprocess.run(["chroot", str(root), "/usr/bin/python3", "-I", "-c", script],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [secret.hex(), key_release.root_commitment(secret).hex()]


def test_the_signer_packages_are_in_the_image():
    assert {"python3-ecdsa", "python3-six", "python3-pycryptodome"} <= set(PACKAGES)
