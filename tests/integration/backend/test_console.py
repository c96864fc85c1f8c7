"""`cvm lease logs`: the node agent ships its guest's serial console to the real backend,
signed by the node key, and the lease's renter reads it with the CLI, marked untrusted.
Nobody else reads it, a forged or replayed upload is refused, and the backend keeps a
bounded tail."""

from __future__ import annotations

import json
import os
import secrets
import time
from base64 import b64encode
from pathlib import Path

import httpx
import pytest
from eth_utils import keccak

from cvm.api_client import ApiClient, ApiError
from cvm.api_models import (
    CONSOLE_CHUNK_MAX_BYTES,
    CONSOLE_TAIL_BYTES,
    NODE_HEADER,
    NONCE_HEADER,
    OFFSET_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from cvm.eip712 import ConsoleUpload, sign_node_message
from cvm.wallet import import_keystore
from node_agent.console_relay import ConsoleRelay
from tests.fixtures.chain import ChainSystem
from tests.integration.backend.conftest import LiveBackend
from tests.integration.cli.test_no_surprises import cvm, no_traceback
from tests.unit.node_agent.fake_qmp import RecordedQmp

pytestmark = pytest.mark.integration

QMP_GREETING = json.loads(
    (Path(__file__).parents[2] / "unit/node_agent/data/qemu_snp_qmp.json").read_text()
)["greeting"]
BOOT = b"SeaBIOS\r\nLinux version 6.1 \xe2\x9c\x93 ok\r\n\x1b[2J\x1b]0;owned\x07login: "


@pytest.fixture
def wallets(chain: ChainSystem, tmp_path: Path) -> dict[str, list[str]]:
    """CLI arguments acting as the lease's renter, and as another renter."""
    password = tmp_path / "pw"
    password.write_text("pw\n")
    os.chmod(password, 0o600)
    found = {}
    for name, account in (("renter", chain.accounts.renter), ("stranger", chain.accounts.stranger)):
        keystore = tmp_path / f"{name}.json"
        import_keystore(keystore, account.key, "pw", kdf="pbkdf2", iterations=2)
        found[name] = ["--wallet", str(keystore), "--password-file", str(password)]
    return found


def _signed(chain: ChainSystem, backend: LiveBackend, lease_id: int, offset: int, chunk: bytes,
            *, signer=None, claimed: str | None = None) -> dict[str, str]:  # type: ignore[no-untyped-def]  # fmt: skip
    """The headers of a console upload signed by `signer` (the node key) for node `claimed`."""
    signer = signer or chain.accounts.node_key
    with ApiClient(backend.url) as api:
        domain = api.domain()
    upload = ConsoleUpload(node=signer.address, lease_id=lease_id, offset=offset,
                           chunk_hash=bytes(keccak(chunk)), timestamp=int(time.time()),
                           nonce=secrets.randbits(63))  # fmt: skip
    return {
        NODE_HEADER: claimed or signer.address,
        TIMESTAMP_HEADER: str(upload.timestamp),
        NONCE_HEADER: str(upload.nonce),
        OFFSET_HEADER: str(offset),
        SIGNATURE_HEADER: sign_node_message(upload, domain, signer.key),
    }


def test_the_console_goes_from_the_node_to_the_renter_and_nobody_else(
    live_backend: LiveBackend,
    chain: ChainSystem,
    wallets: dict[str, list[str]],
    tmp_path: Path,
) -> None:
    lease_id = chain.active_lease()
    live_backend.wait_indexed(lease_id, chain.accounts.node_key.address)
    relay = ConsoleRelay(ApiClient(live_backend.url), chain.accounts.node_key, tmp_path / "relay")
    assert relay.ship(lease_id, BOOT) == len(BOOT)  # what the guest wrote (QEMU's ring buffer)
    assert relay.ship(lease_id) == 0  # nothing new, nothing sent

    record = ["--deployment", str(live_backend.deployment_file)]
    shown = cvm("lease", "logs", str(lease_id), "--json", *record, *wallets["renter"])
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.stdout)
    assert view["text"] == BOOT.decode() and (view["start"], view["end"]) == (0, len(BOOT))
    assert view["trusted"] is False and view["source"] == "host"

    # For people: said to be untrusted, and the host cannot drive the renter's terminal.
    human = cvm("lease", "logs", str(lease_id), *record, *wallets["renter"])
    assert human.exit_code == 0
    assert "UNTRUSTED" in human.stderr
    assert human.stdout == "SeaBIOS\nLinux version 6.1 ✓ ok\n?[2J?]0;owned?login: "

    # More output: only the new bytes travel, and a follower reads from where it was.
    assert relay.ship(lease_id, b"root@guest:~# ") == len(b"root@guest:~# ")
    with ApiClient(live_backend.url) as renter:
        renter.login(chain.accounts.renter.key)
        assert renter.lease_console(lease_id, since=len(BOOT)).text == "root@guest:~# "
        assert renter.lease_console(lease_id).end == len(BOOT) + len(b"root@guest:~# ")

    # Another renter, or nobody signed in, reads nothing.
    other = cvm("lease", "logs", str(lease_id), *record, *wallets["stranger"])
    no_traceback(other)
    assert other.exit_code == 1 and "403" in other.stderr
    with ApiClient(live_backend.url) as anonymous:
        with pytest.raises(ApiError) as refused:
            anonymous.lease_console(lease_id)
        assert refused.value.status_code == 401

    # After the close, --follow prints what is left and ends.
    chain.renter.leases.close_lease(lease_id)
    followed = cvm("lease", "logs", str(lease_id), "--follow", "--json", *record,
                   *wallets["renter"])  # fmt: skip
    assert followed.exit_code == 0, followed.output
    assert json.loads(followed.stdout.splitlines()[0])["text"].endswith("root@guest:~# ")


@pytest.mark.parametrize("live_backend", ["sqlite", "postgresql"], indirect=True)
def test_forged_foreign_and_replayed_uploads_are_refused(
    live_backend: LiveBackend, chain: ChainSystem
) -> None:
    lease_id = chain.active_lease()
    live_backend.wait_indexed(lease_id, chain.accounts.node_key.address)
    url = f"{live_backend.url}/v1/leases/{lease_id}/console"
    chunk = b"kernel: hello\n"
    node = chain.accounts.node_key.address

    forged = _signed(chain, live_backend, lease_id, 0, chunk, signer=chain.accounts.stranger,
                     claimed=node)  # fmt: skip
    answer = httpx.post(url, content=chunk, headers=forged)
    assert answer.status_code == 401 and "signed by" in answer.json()["detail"]
    # Bytes other than the signed ones: the signature no longer matches.
    honest = _signed(chain, live_backend, lease_id, 0, chunk)
    assert httpx.post(url, content=b"kernel: bye!!\n", headers=honest).status_code == 401
    # Validly signed, by a node that is not the lease's.
    foreign = _signed(chain, live_backend, lease_id, 0, chunk, signer=chain.accounts.stranger)
    assert httpx.post(url, content=chunk, headers=foreign).status_code == 403
    assert httpx.post(url, content=chunk, headers={NODE_HEADER: node}).status_code == 401

    assert httpx.post(url, content=chunk, headers=honest).json()["end"] == len(chunk)
    replayed = httpx.post(url, content=chunk, headers=honest)
    assert replayed.status_code == 409 and "replay" in replayed.json()["detail"]
    too_big = b"x" * (CONSOLE_CHUNK_MAX_BYTES + 1)
    oversized = _signed(chain, live_backend, lease_id, len(chunk), too_big)
    assert httpx.post(url, content=too_big, headers=oversized).status_code == 413
    with ApiClient(live_backend.url) as renter:
        renter.login(chain.accounts.renter.key)
        assert renter.lease_console(lease_id).text == chunk.decode()  # once, nothing else


@pytest.mark.parametrize("live_backend", ["sqlite", "postgresql"], indirect=True)
def test_the_backend_keeps_a_bounded_tail(
    live_backend: LiveBackend, chain: ChainSystem, tmp_path: Path
) -> None:
    lease_id = chain.active_lease()
    live_backend.wait_indexed(lease_id, chain.accounts.node_key.address)
    node_key = chain.accounts.node_key.key
    stream = bytes(range(32, 127)) * ((CONSOLE_TAIL_BYTES + 64 * 1024) // 95 + 1)
    with ApiClient(live_backend.url) as node, ApiClient(live_backend.url) as renter:
        domain = node.domain()
        for offset in range(0, len(stream), CONSOLE_CHUNK_MAX_BYTES):
            chunk = stream[offset : offset + CONSOLE_CHUNK_MAX_BYTES]
            receipt = node.upload_console(lease_id, offset, chunk, node_key=node_key, domain=domain)
            assert receipt.end == offset + len(chunk)
            assert receipt.end - receipt.start <= CONSOLE_TAIL_BYTES
        # A retry of bytes already held (a lost answer) adds nothing.
        again = node.upload_console(lease_id, 0, stream[:100], node_key=node_key, domain=domain)
        assert (again.start, again.end) == (len(stream) - CONSOLE_TAIL_BYTES, len(stream))
        renter.login(chain.accounts.renter.key)
        view = renter.lease_console(lease_id)
    assert (view.start, view.end) == (len(stream) - CONSOLE_TAIL_BYTES, len(stream))
    assert view.text.encode() == stream[-CONSOLE_TAIL_BYTES:]


def test_the_relay_skips_what_the_backend_would_not_keep(
    live_backend: LiveBackend, chain: ChainSystem, tmp_path: Path
) -> None:
    lease_id = chain.active_lease()
    live_backend.wait_indexed(lease_id, chain.accounts.node_key.address)
    relay = ConsoleRelay(ApiClient(live_backend.url), chain.accounts.node_key, tmp_path / "relay")
    relay.ship(lease_id, b"early\n")
    flood = b"".join(b"line %06d\n" % i for i in range(40_000))  # 440 000 bytes at once
    shipped = relay.ship(lease_id, flood)
    assert shipped == CONSOLE_TAIL_BYTES  # the rest was skipped, not sent
    with ApiClient(live_backend.url) as renter:
        renter.login(chain.accounts.renter.key)
        view = renter.lease_console(lease_id)
    total = len(b"early\n") + len(flood)
    assert (view.start, view.end) == (total - CONSOLE_TAIL_BYTES, total)
    assert view.text.encode() == flood[-CONSOLE_TAIL_BYTES:]
    # A relaunched guest (a new ring buffer) continues the lease's stream.
    assert relay.ship(lease_id, b"second boot\n") == len(b"second boot\n")
    with ApiClient(live_backend.url) as renter:
        renter.login(chain.accounts.renter.key)
        assert renter.lease_console(lease_id, since=total).text == "second boot\n"


def test_a_qemu_snp_agent_serves_the_renter_and_ships_the_last_output_at_stop(
    live_backend: LiveBackend, chain: ChainSystem, tmp_path: Path
) -> None:
    # Both qemu launchers relay console and secrets; stopping a guest removes its files, so the
    # agent ships what is left first (output written after its last pass is not lost).
    import subprocess
    import sys

    from cvm.images import ImageStore
    from node_agent.agent import NodeAgent
    from node_agent.launcher.qemu_snp import QemuSnpLauncher, SnpConfig
    from node_agent.runtime import Resources
    from node_agent.store import AgentStore

    lease_id = chain.active_lease()
    live_backend.wait_indexed(lease_id, chain.accounts.node_key.address)
    ovmf = tmp_path / "OVMF.amdsev.fd"
    ovmf.write_bytes(b"\0" * 4096)  # never booted: the guest below is a stand-in process
    launcher = QemuSnpLauncher(
        tmp_path / "run", SnpConfig(ovmf=ovmf), images=ImageStore(tmp_path / "images"),
        check_host=False,
    )  # fmt: skip
    agent = NodeAgent(
        chain.node, launcher, AgentStore(tmp_path / "agent.sqlite"),
        Resources(vcpu=16, memory_mib=65_536, disk_gib=500),
        tmp_path / "locks", api=ApiClient(live_backend.url),
    )  # fmt: skip
    # It reads the renter's private spec and images, and relays secrets and the console.
    assert agent.lifecycle.spec_source is not None and agent.lifecycle.images is not None
    assert agent.relay is not None and agent.console is not None
    # A running "guest" as QEMU leaves one: a process named for the lease, its pid file, and
    # its monitor, whose ring buffer holds the console (a recorded QMP conversation).
    directory = launcher.guest_dir(lease_id)
    directory.mkdir(parents=True)
    guest = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-name", f"cvm-lease-{lease_id}"]
    )

    def ringbuf(text: bytes) -> dict[str, object]:
        read = {"device": "console", "size": 1 << 16, "format": "base64"}
        return {"execute": "ringbuf-read", "arguments": read, "return": b64encode(text).decode()}

    session = {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "return": {}}
    qmp = RecordedQmp(
        launcher.qmp_socket(lease_id),
        QMP_GREETING,
        [session, ringbuf(b"booted\r\n"), ringbuf(b""),  # a regular pass
         session, ringbuf(b"reboot: Power down\r\n"), ringbuf(b""),  # last words, then stop
         session, {"execute": "quit", "return": {}}],
        on_quit=guest.kill,
    )  # fmt: skip
    try:
        (directory / "qemu.pid").write_text(str(guest.pid))
        assert agent.console.ship(lease_id, launcher.read_console(lease_id)) == 8  # a regular pass
        agent.lifecycle.retire(lease_id, None, "lease closed")
        assert not directory.exists()
        guest.wait(timeout=10)  # the guest process ended (TimeoutExpired otherwise)
        assert qmp.unexpected == [] and qmp.exchanges == []
    finally:
        qmp.close()
        guest.kill()
        guest.wait()
    with ApiClient(live_backend.url) as renter:
        renter.login(chain.accounts.renter.key)
        assert renter.lease_console(lease_id).text == "booted\r\nreboot: Power down\r\n"
