"""The serial console stays bounded on the node whatever the guest writes and whether or not
the backend takes it: QEMU keeps it in a ring buffer (never a file), and the relay holds at
most its budget per lease of what is not shipped yet; the lease's stream goes on where it was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cvm.api_client import ApiError
from cvm.api_models import CONSOLE_TAIL_BYTES
from cvm.images import Image
from node_agent.console_relay import ConsoleRelay
from node_agent.launcher.qemu_args import CONSOLE_RING_BYTES, console_args, image_args


@dataclass
class Key:
    key: bytes = b"k"


class FakeApi:
    """The backend's console endpoint; `down` makes it refuse (as when it is unreachable)."""

    def __init__(self) -> None:
        self.uploads: list[tuple[int, bytes]] = []
        self.down = False

    def domain(self) -> Any:
        return None

    def upload_console(self, lease_id: int, offset: int, chunk: bytes, **kwargs: Any) -> None:
        if self.down:
            raise ApiError(0, "backend unreachable")
        self.uploads.append((offset, chunk))


def disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def test_a_flood_while_the_backend_is_away_stays_within_the_budget(tmp_path: Path) -> None:
    """A guest writing its console in a loop while the backend refuses: on the old relay
    QEMU's serial.log grew on the host's disk (the relay emptied it only after shipping it,
    which never happened). Now what is held is the budget, and nothing grows on disk."""
    api = FakeApi()
    relay = ConsoleRelay(api, Key(), tmp_path / "relay")  # type: ignore[arg-type]
    api.down = True
    written = 0
    for line in range(2_000):  # 2,000 passes of a full QEMU ring each: 512 MiB written
        output = b"%08d" % line + b"x" * (CONSOLE_RING_BYTES - 8)
        written += len(output)
        with pytest.raises(ApiError):
            relay.ship(3, output)
        assert relay.pending(3) <= CONSOLE_TAIL_BYTES
        assert disk_bytes(tmp_path) < 1024  # the stream position, nothing else
    api.down = False
    assert relay.ship(3) == CONSOLE_TAIL_BYTES  # the newest output, at its place in the stream
    first_offset, first_chunk = api.uploads[0]
    assert first_offset == written - CONSOLE_TAIL_BYTES
    assert first_chunk.startswith(b"%08d" % 1_999)
    assert relay.pending(3) == 0


def test_the_stream_goes_on_across_passes_and_guests(tmp_path: Path) -> None:
    api = FakeApi()
    relay = ConsoleRelay(api, Key(), tmp_path / "relay")  # type: ignore[arg-type]
    assert relay.ship(3, b"boot\n") == 5
    assert relay.ship(3) == 0  # nothing new, nothing sent
    api.down = True
    with pytest.raises(ApiError):
        relay.ship(3, b"more\n")
    api.down = False
    # A restarted agent (its memory lost) goes on from the recorded offset.
    again = ConsoleRelay(api, Key(), tmp_path / "relay")  # type: ignore[arg-type]
    assert again.ship(3, b"relaunched\n") == 11
    assert api.uploads == [(0, b"boot\n"), (5, b"relaunched\n")]


def test_the_old_relays_stream_position_is_kept(tmp_path: Path) -> None:
    (tmp_path / "relay").mkdir()
    (tmp_path / "relay" / "lease-3.json").write_text('{"guest": 12, "read": 40, "sent": 900}')
    api = FakeApi()
    relay = ConsoleRelay(api, Key(), tmp_path / "relay")  # type: ignore[arg-type]
    relay.ship(3, b"on\n")
    assert api.uploads == [(900, b"on\n")]


def test_qemu_keeps_the_console_in_a_ring_buffer_not_a_file(tmp_path: Path) -> None:
    """The old command line wrote the console to `serial.log` on the host's disk."""
    image = Image("i" * 64, tmp_path, "console=ttyS0", "0" * 64, "0" * 64)
    line = [*console_args(), *image_args(image, 2222, tmp_path / "agent")]
    chardevs = [line[i + 1] for i, arg in enumerate(line) if arg == "-chardev"]
    assert f"ringbuf,id=console,size={CONSOLE_RING_BYTES}" in chardevs
    assert not any(dev.startswith("file") for dev in chardevs)
    assert "chardev:console" in line and not any("serial.log" in arg for arg in line)
    assert CONSOLE_RING_BYTES & (CONSOLE_RING_BYTES - 1) == 0  # QEMU wants a power of two
