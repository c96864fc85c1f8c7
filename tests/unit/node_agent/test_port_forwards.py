"""Service ports of a workload image: forwarded from the node's public host to the guest's TLS
front (qemu_args), read from the image's manifest, and CVM_NODE_PUBLIC_HOST checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from cvm.config import Settings
from cvm.images import Image
from node_agent.launcher.qemu_args import image_args, netdev_arg, service_ports


def _image(directory: Path, workload: object = None) -> Image:
    manifest = {"format": "cvm.image.v1"}
    if workload is not None:
        manifest["workload"] = workload  # type: ignore[assignment]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return Image("i" * 64, directory, "console=ttyS0", "0" * 64, "0" * 64)


def test_ssh_and_each_service_port_are_forwarded_from_the_public_host() -> None:
    assert netdev_arg(2222) == "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"
    assert netdev_arg(2222, host="198.51.100.4", forwards=[(8080, 40001), (9000, 40002)]) == (
        "user,id=net0,restrict=on,hostfwd=tcp:198.51.100.4:2222-:22,"
        "hostfwd=tcp:198.51.100.4:40001-:8080,hostfwd=tcp:198.51.100.4:40002-:9000"
    )


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1,hostfwd=tcp::1-:1", "example.org", "::1", "", "256.0.0.1"],
)
def test_a_host_that_is_not_an_ipv4_address_never_reaches_qemus_options(host: str) -> None:
    with pytest.raises(ValueError):
        netdev_arg(2222, host=host)


@pytest.mark.parametrize("forward", [(0, 40001), (8080, 0), (8080, 65536), (True, 1)])
def test_a_port_out_of_range_is_refused(forward: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="forwarded port"):
        netdev_arg(2222, forwards=[forward])


def test_image_args_carry_the_forwards(tmp_path: Path) -> None:
    line = image_args(_image(tmp_path), 2222, tmp_path / "agent", host="10.1.2.3",
                      forwards=[(8080, 40001)])  # fmt: skip
    netdev = line[line.index("-netdev") + 1]
    assert "hostfwd=tcp:10.1.2.3:40001-:8080" in netdev and "restrict=on" in netdev


def test_service_ports_come_from_the_manifests_workload(tmp_path: Path) -> None:
    assert service_ports(_image(tmp_path)) == []  # the default image: no workload
    summary = {"name": "kv", "ports": [{"name": "api", "port": 9000}, {"name": "h", "port": 80}]}
    assert service_ports(_image(tmp_path, summary)) == [80, 9000]
    assert service_ports(_image(tmp_path, {"name": "kv", "ports": []})) == []


@pytest.mark.parametrize(
    "ports",
    [[{"port": 22}], [{"port": 0}], [{"port": "80"}], "80", [{"port": p} for p in range(1, 40)]],
)
def test_a_workload_port_list_the_node_must_not_forward_is_refused(
    tmp_path: Path, ports: object
) -> None:
    with pytest.raises(ValueError):
        service_ports(_image(tmp_path, {"name": "kv", "ports": ports}))


def test_the_public_host_setting_is_one_ipv4_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).node_public_host == "127.0.0.1"  # type: ignore[call-arg]
    monkeypatch.setenv("CVM_NODE_PUBLIC_HOST", "203.0.113.9")
    assert Settings(_env_file=None).node_public_host == "203.0.113.9"  # type: ignore[call-arg]
    for bad in ("0.0.0.0", "node.example", "1.2.3.4,hostfwd=tcp::2-:22"):
        monkeypatch.setenv("CVM_NODE_PUBLIC_HOST", bad)
        with pytest.raises(ValidationError, match="node_public_host"):
            Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_workload_models_outputs_are_what_the_node_and_the_guest_read(tmp_path: Path) -> None:
    """The `wl` model writes the manifest's summary and /etc/cvm/workload.json; the node
    (service_ports) and the guest's TLS front (workload_ports) read the same ports from them."""
    from cvm.images.workload import Workload
    from guest import tls_front

    workload = Workload.model_validate({
        "format": "cvm.workload.v1", "name": "kv",
        "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 80}],
        "services": [{"name": "app", "command": ["python3", "/opt/app/server.py"]}],
    })  # fmt: skip
    assert service_ports(_image(tmp_path, workload.summary())) == [80, 8080]
    resolved = tmp_path / "workload.json"
    resolved.write_bytes(workload.resolved_json())
    assert sorted(tls_front.workload_ports(resolved)) == [80, 8080]
