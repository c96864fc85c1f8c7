"""`cvm demo --launcher qemu` helpers: the image store every command uses, no key left behind."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from devstack import vm_demo


def test_build_image_uses_the_configured_image_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[Path] = []

    class Store:
        def __init__(self, root: Path) -> None:
            used.append(root)

        def build(self) -> Any:
            return type("Image", (), {"image_id": "x"})()

    monkeypatch.setattr("cvm.images.ImageStore", Store)
    monkeypatch.setenv("CVM_IMAGE_DIR", str(tmp_path / "elsewhere"))
    vm_demo.build_image(tmp_path / "data")
    assert used == [tmp_path / "elsewhere"]


def test_the_ssh_key_directory_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    def journey(state: Any, image: Any, timeout: float, step: Any, work: Path) -> Any:
        seen.append(work)
        assert work.is_dir() and work.name.startswith("cvm-vm-demo-")
        assert str(work).startswith(tempfile.gettempdir())
        raise RuntimeError("a step failed")

    monkeypatch.setattr(vm_demo, "_vm_journey", journey)
    with pytest.raises(RuntimeError):
        vm_demo.vm_journey(None, None, 1.0, None)  # type: ignore[arg-type]
    assert seen and not seen[0].exists()
