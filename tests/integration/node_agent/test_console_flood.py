"""A real TCG guest that writes its serial console in a loop, as fast as QEMU runs it: the
bytes the node holds for its console (on disk and in the relay) stay under the budget while
the backend is away, and the newest output is shipped once it is back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cvm.api_client import ApiError
from cvm.api_models import CONSOLE_TAIL_BYTES
from cvm.images import Image
from node_agent.console_relay import ConsoleRelay
from node_agent.launcher.base import GuestReport, GuestSpec, GuestState, HostBinding
from node_agent.launcher.qemu import QemuLauncher
from node_agent.launcher.qemu_args import CONSOLE_RING_BYTES
from tests.integration.node_agent.qemu import ensure_qemu
from tests.unit.node_agent.test_console_relay import FakeApi, Key, disk_bytes

BINDING = HostBinding(31337, "0x" + "5a" * 20, "0x" + "7e" * 20)

pytestmark = [pytest.mark.integration, pytest.mark.guests]

# A boot sector that floods COM1: mov dx, 0x3f8; mov al, 'x'; l: out dx, al; jmp l.
FLOOD = bytes.fromhex("baf803b078eeebfd")


class NoSigner:
    def sign_report(self, measurement: bytes, report_data: bytes) -> GuestReport:
        raise AssertionError("this guest is never attested")


class FloodingGuests(QemuLauncher):
    """The `qemu` launcher, its guests booting the flooding sector from an IDE disk."""

    def __init__(self, run_dir: Path, boot_sector: Path) -> None:
        super().__init__(run_dir, NoSigner(), qemu_binary=ensure_qemu(), accel="tcg")
        self.boot_sector = boot_sector

    def command_line(
        self,
        spec: GuestSpec,
        image: Image | None = None,
        ssh_port: int = 0,
        forwards: Sequence[tuple[int, int]] = (),
    ) -> list[str]:
        return [*super().command_line(spec, image, ssh_port, forwards),
                "-drive", f"file={self.boot_sector},format=raw,if=ide"]  # fmt: skip


@pytest.fixture
def flooding(tmp_path: Path) -> Iterator[FloodingGuests]:
    sector = tmp_path / "flood.img"
    sector.write_bytes(FLOOD + bytes(510 - len(FLOOD)) + b"\x55\xaa")
    launcher = FloodingGuests(tmp_path / "run", sector)
    yield launcher
    launcher.stop(1)


def test_a_flooding_guest_never_grows_the_nodes_console_beyond_its_budget(
    flooding: FloodingGuests, tmp_path: Path
) -> None:
    """On the old launcher QEMU wrote the console to `serial.log` in the guest's directory,
    and the relay emptied it only after shipping it: with the backend away, the file grew
    with everything the guest wrote. Now it is never on disk, and what the relay holds is the
    budget."""
    flooding.launch(GuestSpec(1, 1, 64, 1, bytes(48), binding=BINDING))
    assert flooding.status(1).state == GuestState.RUNNING
    api: Any = FakeApi()
    relay = ConsoleRelay(api, Key(), tmp_path / "relay")  # type: ignore[arg-type]
    api.down = True
    written = 0
    for _ in range(10_000):  # until the guest wrote 8 budgets' worth (seconds under TCG)
        output = flooding.read_console(1)
        assert len(output) <= CONSOLE_RING_BYTES
        written += len(output)
        if output:
            with pytest.raises(ApiError):
                relay.ship(1, output)
        assert relay.pending(1) <= CONSOLE_TAIL_BYTES
        assert disk_bytes(flooding.guest_dir(1)) < 4096  # spec.json and the pid file
        if written > 8 * CONSOLE_TAIL_BYTES:
            break
    assert written > 8 * CONSOLE_TAIL_BYTES  # the flood was real
    assert set(output) == {ord("x")}
    api.down = False
    assert relay.ship(1) == CONSOLE_TAIL_BYTES
    assert api.uploads[0][0] == written - CONSOLE_TAIL_BYTES  # the gap is in the stream
