"""The serial console file stays bounded: once shipped past what the backend keeps, the
relay empties it, and the lease's stream goes on where it was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvm.api_models import CONSOLE_TAIL_BYTES
from node_agent.console_relay import ConsoleRelay


@dataclass
class Key:
    key: bytes = b"k"


class FakeApi:
    def __init__(self) -> None:
        self.uploads: list[tuple[int, bytes]] = []

    def domain(self) -> Any:
        return None

    def upload_console(self, lease_id: int, offset: int, chunk: bytes, **kwargs: Any) -> None:
        self.uploads.append((offset, chunk))


def test_a_shipped_console_log_past_the_tail_is_emptied(tmp_path: Path) -> None:
    api = FakeApi()
    relay = ConsoleRelay(api, Key(), tmp_path / "relay")  # type: ignore[arg-type]
    serial = tmp_path / "serial.log"
    small = b"boot\n" * 10
    serial.write_bytes(small)
    assert relay.ship(3, serial) == len(small)
    assert serial.stat().st_size == len(small)  # within the tail: left as it is
    with serial.open("ab") as guest:  # a guest printing in a loop
        guest.write(b"x" * CONSOLE_TAIL_BYTES)
    assert relay.ship(3, serial) == CONSOLE_TAIL_BYTES
    assert serial.stat().st_size == 0
    with serial.open("ab") as guest:  # QEMU appends: its next write is at the new start
        guest.write(b"more\n")
    assert relay.ship(3, serial) == 5
    offset, chunk = api.uploads[-1]
    assert chunk == b"more\n" and offset == len(small) + CONSOLE_TAIL_BYTES
