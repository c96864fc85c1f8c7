"""Find QEMU for the launcher tests, installing Debian's qemu-system-x86 when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

QEMU = "qemu-system-x86_64"


def ensure_qemu() -> str:
    """The QEMU binary; installs it with apt-get as root (CI runs as root on Debian)."""
    found = shutil.which(QEMU)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{QEMU} is missing and cannot be installed here (needs root and apt-get)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-system-x86"],
    ):
        subprocess.run(command, check=True, env=environment, capture_output=True, timeout=900)
    found = shutil.which(QEMU)
    if not found:
        pytest.fail(f"apt-get installed qemu-system-x86 but {QEMU} is not on PATH")
    return found
