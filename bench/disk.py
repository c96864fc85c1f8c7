"""The encrypted volume's throughput against a plain disk of the same guest, in one run.

`python -m bench.disk --json [--mib N] [--rounds R]` boots the cvm guest image with the qemu
launcher (TCG where KVM is unusable) and two virtio disks of the same kind: the lease's data
volume, which the guest opens with the released disk key (LUKS2, aes-xts-plain64 +
hmac-sha256 in dm-integrity, ext4 on top), and an unencrypted scratch disk (ext4 straight on
it). In the guest, `dd` writes N MiB (fsync'd) and reads them back after dropping the page
cache, on each in turn, R rounds; medians in MB/s and the encrypted/plain ratio (goal >= 0.5
under TCG). `cryptsetup benchmark` in the same guest gives the cipher's own speed and the
kernel's sha256, to say what dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from eth_account import Account

from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import seal, verify_guest
from cvm.images import Image, ImageStore, measure
from node_agent.launcher.base import GuestSpec, HostBinding
from node_agent.launcher.qemu import QemuLauncher, probe_accel
from node_agent.launcher.qemu_args import supports_direct_io
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.volumes import GIB

GOAL_RATIO = 0.5
CHAIN_ID, REGISTRY, LEASE = 31337, "0x" + "b0" * 20, 1
SCRATCH_SERIAL = "cvm-scratch"


class ScratchLauncher(QemuLauncher):
    """The qemu launcher, with an unencrypted scratch disk beside each guest's data volume."""

    cpu: str | None = None

    def command_line(
        self,
        spec: GuestSpec,
        image: Image | None = None,
        ssh_port: int = 0,
        forwards: Sequence[tuple[int, int]] = (),
    ) -> list[str]:
        argv = super().command_line(spec, image, ssh_port, forwards)
        return [argv[0], "-cpu", self.cpu, *argv[1:]] if self.cpu else argv

    def data_volume_args(self, spec: GuestSpec, virtio: str = "") -> list[str]:
        scratch = self.run_dir / f"scratch-{spec.lease_id}.img"
        with scratch.open("ab") as handle:
            handle.truncate(spec.disk_gib * GIB)
        cache = "none" if supports_direct_io(scratch) else "writeback"
        return [
            *super().data_volume_args(spec, virtio),
            "-drive", f"file={scratch},if=none,id=scratch,format=raw,cache={cache},discard=ignore",
            "-device", f"virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}{virtio}",
        ]  # fmt: skip


def _ssh(key: Path, known_hosts: Path, port: int, command: str, timeout: float = 900) -> str:
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port),
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
         "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"in the guest, {command!r} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


# Runs in the guest: dd through each mount, timed; one JSON line.
_MEASURE = r"""
import json, subprocess, sys, time
mib, target = int(sys.argv[1]), sys.argv[2]
path = target + "/bench.bin"
def timed(args):
    started = time.monotonic()
    subprocess.run(args, check=True, capture_output=True)
    return time.monotonic() - started
write = timed(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=%d" % mib, "conv=fsync"])
open("/proc/sys/vm/drop_caches", "w").write("3\n")
read = timed(["dd", "if=" + path, "of=/dev/null", "bs=1M"])
subprocess.run(["rm", "-f", path], check=True)
print(json.dumps({"write_s": write, "read_s": read}))
"""

_PREPARE_SCRATCH = f"""
for b in /sys/block/vd*; do
  if [ "$(cat $b/serial)" = "{SCRATCH_SERIAL}" ]; then dev=/dev/${{b##*/}}; fi
done
mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1 $dev && mkdir -p /scratch &&
mount -t ext4 $dev /scratch
"""


def _cipher_speeds(run: object) -> dict[str, object]:
    """`cryptsetup benchmark` in the guest: aes-xts-512 (kernel) and PBKDF2-sha256 (OpenSSL)."""
    out = str(run("cryptsetup benchmark -c aes-xts-plain64 -s 512 2>&1; "  # type: ignore[operator]
                  "cryptsetup benchmark -h sha256 2>&1 | grep -i pbkdf2 || true; "
                  "grep -A2 'name.*authenc' /proc/crypto | grep driver || true"))  # fmt: skip
    speeds: dict[str, object] = {}
    match = re.search(r"aes-xts\s+512b\s+([\d.]+)\s+MiB/s\s+([\d.]+)\s+MiB/s", out)
    if match:
        speeds["aes_xts_encrypt_mib_s"] = float(match.group(1))
        speeds["aes_xts_decrypt_mib_s"] = float(match.group(2))
    match = re.search(r"PBKDF2-sha256\s+(\d+)\s+iterations", out)
    if match:
        # Each iteration is one HMAC-SHA256 of 32 bytes (OpenSSL, in user space).
        speeds["pbkdf2_sha256_iterations_s"] = float(match.group(1))
    match = re.search(r"driver\s+:\s+(authenc\S+)", out)
    if match:
        speeds["dm_crypt_driver"] = match.group(1)
    return speeds


def _dominant(encrypted: dict[str, float], speeds: dict[str, object]) -> str:
    """What bounds the encrypted volume, from this run's figures: when its reads go no
    faster than the guest's AES-XTS alone, the cipher (emulated under TCG) is the limit."""
    cipher = speeds.get("aes_xts_decrypt_mib_s")
    driver = str(speeds.get("dm_crypt_driver", "?"))
    aes = "AES-NI (emulated by TCG)" if "aesni" in driver else "generic C AES (no AES-NI)"
    if isinstance(cipher, float) and encrypted["read_mb_s"] <= 1.25 * cipher * 1.048576:
        return (
            f"the cipher: encrypted reads ({encrypted['read_mb_s']} MB/s) run at the guest's"
            f" AES-XTS speed ({cipher} MiB/s, {aes}), with HMAC-SHA256 on every 4 KiB on top"
            f" ({driver}); the plain disk only copies memory"
        )
    return f"per-sector crypto ({driver}) and dm-integrity's tag I/O"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mib", type=int, default=128, help="MiB written and read per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu", help="QEMU -cpu model (default: the launcher's)")
    parser.add_argument(
        "--images", type=Path, default=Path(tempfile.gettempdir()) / "cvm-test-images"
    )
    args = parser.parse_args()
    if shutil.which("ssh") is None:
        raise SystemExit("the ssh client is needed (Debian: openssh-client)")

    store = ImageStore(args.images)
    image = store.build()
    accel = probe_accel("qemu-system-x86_64", image.kernel)
    work = Path(tempfile.mkdtemp(prefix="cvm-bench-disk-"))
    sim = SimulatedAmdSp()
    launcher = ScratchLauncher(work / "qemu", sim, accel=accel, images=store, boot_timeout_s=180)
    launcher.cpu = args.cpu
    renter = Account.create()
    binding = HostBinding(CHAIN_ID, REGISTRY, renter.address)
    disk_gib = max(1, -(-args.mib * 2 // 1024))
    spec = GuestSpec(LEASE, 1, 1024, disk_gib, measure(image), image.image_id, binding)
    try:
        launcher.launch(spec)
        launcher.wait_ready(LEASE)
        got = launcher.get_report(LEASE, 0)
        bundle = EvidenceBundle(report=got.report, vcek=got.vcek_der, chain=got.cert_chain_pem,
                                chain_id=CHAIN_ID, registry=REGISTRY, lease_id=LEASE, nonce=0,
                                guest_key=got.guest_key)  # fmt: skip
        guest = verify_guest(bundle, chain_id=CHAIN_ID, registry=REGISTRY, lease_id=LEASE,
                             nonce=0, renter=renter.address,
                             expected_measurement=spec.expected_measurement,
                             trusted_roots=[sim.ark])  # fmt: skip
        ssh_key = ed25519.Ed25519PrivateKey.generate()
        key_file = work / "id_ed25519"
        key_file.write_bytes(ssh_key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.OpenSSH,
                                                   serialization.NoEncryption()))  # fmt: skip
        key_file.chmod(0o600)
        public = ssh_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        sealed = seal(guest, renter, seq=1, ssh_keys=[public.decode()],
                      secrets={"cvm.disk_key": os.urandom(32)})  # fmt: skip
        launcher.deliver_secrets(LEASE, sealed.to_json_dict())
        deadline = time.monotonic() + 600
        while True:
            volume = launcher.channel(LEASE).request({"op": "status"}, timeout_s=60)["volume"]
            if volume["state"] == "open":
                break
            if volume["state"] == "error" or time.monotonic() > deadline:
                raise SystemExit(f"the volume did not open: {volume}")
            time.sleep(1)
        port = launcher.ssh_port(LEASE)
        known_hosts = work / "known_hosts"
        known_hosts.write_text(guest.known_hosts_line("127.0.0.1", port))

        def run(command: str) -> str:
            return _ssh(key_file, known_hosts, port, command)

        run(_PREPARE_SCRATCH)
        run(f"cat > /tmp/measure.py <<'EOF'\n{_MEASURE}\nEOF")
        rounds: dict[str, list[dict[str, float]]] = {"encrypted": [], "plain": []}
        for _ in range(args.rounds):
            for name, mount in (("plain", "/scratch"), ("encrypted", "/data")):
                line = run(f"python3 /tmp/measure.py {args.mib} {mount}").strip().splitlines()[-1]
                rounds[name].append(json.loads(line))
        speeds = _cipher_speeds(run)
        errors = launcher.channel(LEASE).request({"op": "status"})["volume"]["integrity_errors"]
    finally:
        launcher.stop(LEASE)
        shutil.rmtree(work, ignore_errors=True)

    def mb_s(name: str, kind: str) -> float:
        seconds = statistics.median(r[f"{kind}_s"] for r in rounds[name])
        return round(args.mib * 2**20 / 1e6 / seconds, 1)

    figures = {name: {"write_mb_s": mb_s(name, "write"), "read_mb_s": mb_s(name, "read")}
               for name in rounds}  # fmt: skip
    ratio_write = round(figures["encrypted"]["write_mb_s"] / figures["plain"]["write_mb_s"], 2)
    ratio_read = round(figures["encrypted"]["read_mb_s"] / figures["plain"]["read_mb_s"], 2)
    result = {
        "accel": accel,
        "mib": args.mib,
        "rounds": args.rounds,
        "mode": "LUKS2 aes-xts-plain64 + hmac-sha256 (dm-integrity, journal), 4 KiB sectors",
        **figures,
        "ratio_write": ratio_write,
        "ratio_read": ratio_read,
        "goal_ratio": GOAL_RATIO,
        "meets_goal": min(ratio_write, ratio_read) >= GOAL_RATIO,
        "guest_crypto": speeds,
        "integrity_errors": errors,
        "dominant": _dominant(figures["encrypted"], speeds),
    }
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
