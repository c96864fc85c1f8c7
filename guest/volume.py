"""The guest's encrypted data volume: a virtio disk (serial `cvm-data`) the host stores and
only this guest can read, opened with the key the renter releases (`cvm.disk_key`).

LUKS2 with dm-integrity (`aes-xts-plain64` + `hmac-sha256`, 4 KiB sectors): every sector
carries an HMAC tag over its ciphertext and its position, so a block the host changed reads
as an I/O error, never as other data, and the host sees only ciphertext. What it can still
do (nothing in the sector format can stop it): withhold the disk, wipe it, or put back an
older copy of a whole sector (tag and data) or of the whole volume.

A wiped volume is the one case the guest formats: no LUKS header at all. A header that
exists but does not open with the key is an error, never a reason to format. A host that
wipes the header to make the guest start afresh gets a fresh, empty volume and nothing
else, and the guest says so: `volume_status()["formatted_at_boot"]` (and `open_volume`'s
"formatted") reach the renter's client, which knows whether it expected an existing volume.

Runs in the guest, as root; standard library only. The key never appears on a command
line or in a log: it goes to cryptsetup on its standard input.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERIAL = "cvm-data"  # the virtio-blk serial the launcher gives the volume
BY_ID = Path("/dev/disk/by-id/virtio-cvm-data")  # where udev would link it (no udev here)
SYS_BLOCK = Path("/sys/block")
MAPPER_NAME = "cvm-data"
MAPPER = Path("/dev/mapper") / MAPPER_NAME
# cryptsetup names the dm-integrity device under the dm-crypt one "<name>_dif".
INTEGRITY_NAME = f"{MAPPER_NAME}_dif"
WORKLOAD_FILE = Path("/etc/cvm/workload.json")
DEFAULT_MOUNT = Path("/data")
KEY_SIZE = 32
CIPHER = "aes-xts-plain64"
INTEGRITY = "hmac-sha256"
# 512 bits of XTS key (two AES-256 keys); cryptsetup adds the 256-bit HMAC key to it.
CIPHER_KEY_BITS = 512
SECTOR_SIZE = 4096  # one tag per 4 KiB: an eighth of the tag work and metadata of 512 B
# The key is 32 random bytes, not a passphrase: guessing it is 2**256 work whatever the
# KDF, so stretching adds nothing and would only cost boot time (argon2's default wants a
# second and up to 1 GiB of the guest's memory, far more under emulation). PBKDF2 with the
# fewest iterations LUKS2 accepts keeps the keyslot a plain, cheap key wrap.
PBKDF_ITERATIONS = 1000
# Without a wipe, luksFormat returns at once and every sector reads as an I/O error until
# first written (its tag was never computed); ext4 never reads a block it has not written
# (mkfs writes its metadata, unwritten extents read as zeros without I/O), so it copes.
# A wipe would write the whole volume through the crypto at format time: minutes per GiB
# under emulation.
WIPE = False
ZEROED_HEAD_MIB = 4
TIMEOUT_S = 600.0
# `status` runs under the agent's lock: a device that stopped answering must not hold it.
STATUS_TIMEOUT_S = 10.0
# What the kernel logs when a tag does not match: dm-crypt for LUKS2's AEAD/HMAC sectors,
# dm-integrity for its own internal hash.
_KERNEL_INTEGRITY_ERROR = re.compile(rb"INTEGRITY AEAD ERROR|[Cc]hecksum failed at sector")


class VolumeError(Exception):
    """The volume cannot be opened or mounted; the message says why (never the key)."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


# Runs one command (argv, bytes for its stdin or None, a timeout in seconds) and returns
# what it did.
Runner = Callable[[Sequence[str], bytes | None, float], Completed]


def run_command(
    args: Sequence[str], stdin: bytes | None = None, timeout: float = TIMEOUT_S
) -> Completed:
    try:
        done = subprocess.run(
            list(args), input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return Completed(127, "", f"{args[0]}: not found")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"{args[0]}: timed out after {timeout:.0f} s")
    return Completed(
        done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )


def find_device(by_id: Path = BY_ID, sys_block: Path = SYS_BLOCK) -> Path | None:
    """The volume's block device: udev's by-id link, else the virtio disk whose serial is
    `cvm-data` (this guest has no udev: the kernel's sysfs says it)."""
    if by_id.exists():
        return by_id
    for entry in sorted(sys_block.glob("vd*")):
        try:
            if (entry / "serial").read_text().strip() == SERIAL:
                return Path("/dev") / entry.name
        except OSError:
            continue
    return None


def workload_mount(workload_file: Path = WORKLOAD_FILE) -> Path:
    """Where the workload wants its disk (`disk.mount` of /etc/cvm/workload.json), else /data."""
    try:
        disk = json.loads(workload_file.read_text()).get("disk")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_MOUNT
    mount = disk.get("mount") if isinstance(disk, dict) else None
    return Path(mount) if isinstance(mount, str) and mount else DEFAULT_MOUNT


def check_mountpoint(mountpoint: Path) -> Path:
    """An absolute, normal path that is not / nor under the kernel's or cvm's own trees."""
    text = str(mountpoint)
    if not mountpoint.is_absolute() or os.path.normpath(text) != text or text == "/":
        raise VolumeError(f"mount point {text!r} must be an absolute, normal path other than /")
    for reserved in ("/proc", "/sys", "/dev", "/run", "/usr/lib/cvm", "/etc"):
        if text == reserved or text.startswith(reserved + "/"):
            raise VolumeError(f"mount point {text} is inside {reserved}")
    return mountpoint


# --- the commands (pure: what is run, for the tests to read) -----------------------------
def is_luks_args(device: Path) -> list[str]:
    return ["cryptsetup", "isLuks", "--type", "luks2", str(device)]


def format_args(device: Path) -> list[str]:
    args = ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
            "--cipher", CIPHER, "--key-size", str(CIPHER_KEY_BITS),
            "--integrity", INTEGRITY, "--sector-size", str(SECTOR_SIZE),
            "--pbkdf", "pbkdf2", "--hash", "sha256",
            "--pbkdf-force-iterations", str(PBKDF_ITERATIONS),
            "--key-file", "-", "--keyfile-size", str(KEY_SIZE)]  # fmt: skip
    if not WIPE:
        args.append("--integrity-no-wipe")
    return [*args, str(device)]


def open_args(device: Path, *, test_only: bool = False, header: Path | None = None) -> list[str]:
    args = ["cryptsetup", "open", "--type", "luks2", "--key-file", "-",
            "--keyfile-size", str(KEY_SIZE)]  # fmt: skip
    if header is not None:
        args += ["--header", str(header)]
    if test_only:
        return [*args, "--test-passphrase", str(device)]
    return [*args, str(device), MAPPER_NAME]


def dump_args(device: Path) -> list[str]:
    return ["cryptsetup", "luksDump", "--dump-json-metadata", str(device)]


def active_status_args() -> list[str]:
    return ["cryptsetup", "status", MAPPER_NAME]


def close_args() -> list[str]:
    return ["cryptsetup", "close", MAPPER_NAME]


INTEGRITY_TYPE = "hmac(sha256)"  # how LUKS2 metadata and `cryptsetup status` name INTEGRITY
# An existing volume is opened through a copy of its header area taken once into guest
# memory (cryptsetup --header): what is checked is what is used, whatever the host serves
# at a second read. The area a LUKS2 header with its keyslots takes by default (the data
# segment starts there), and where the copy goes (a tmpfs, root only).
HEADER_AREA_BYTES = 16 * 1024**2
HEADER_COPY = Path("/run/cvm/volume-header.img")


def copy_header(device: Path, copy: Path, size: int = HEADER_AREA_BYTES) -> None:
    """The first `size` bytes of `device` into a new file `copy` (0600)."""
    copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    copy.unlink(missing_ok=True)
    source = os.open(device, os.O_RDONLY)
    try:
        target = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            done = 0
            while done < size:
                chunk = os.pread(source, min(1 << 20, size - done), done)
                if not chunk:
                    break
                os.write(target, chunk)
                done += len(chunk)
        finally:
            os.close(target)
    finally:
        os.close(source)


def check_header(metadata: str) -> None:
    """VolumeError unless a LUKS2 header's JSON metadata has the shape this guest formats.

    The header is the host's to write: one whose keyslot is "encrypted" with cipher_null
    opens with any key and hands over a volume key the host chose; a segment with
    cipher_null or no integrity stores what the guest writes as plaintext or unchecked;
    reencryption metadata makes cryptsetup rewrite the data. None of these is opened."""
    try:
        doc = json.loads(metadata)
    except ValueError:
        raise VolumeError("the volume's LUKS2 metadata is not readable JSON") from None
    if not isinstance(doc, dict):
        raise VolumeError("the volume's LUKS2 metadata is not a JSON object")
    keyslots, segments = doc.get("keyslots"), doc.get("segments")
    config = doc.get("config")
    config = config if isinstance(config, dict) else {}
    problems = []
    if not isinstance(keyslots, dict) or not keyslots:
        problems.append("no keyslot")
    else:
        for name, slot in keyslots.items():
            area = slot.get("area") if isinstance(slot, dict) else None
            if not isinstance(slot, dict) or slot.get("type") != "luks2":
                problems.append(f"keyslot {name} is not a plain luks2 keyslot")
            elif not isinstance(area, dict) or area.get("encryption") != CIPHER:
                problems.append(f"keyslot {name} is not encrypted with {CIPHER}")
            elif not _within(area.get("offset"), area.get("size"), HEADER_AREA_BYTES):
                problems.append(f"keyslot {name} lies beyond the header area")
    if not isinstance(segments, dict) or len(segments) != 1:
        problems.append("not exactly one data segment")
    else:
        segment = next(iter(segments.values()))
        segment = segment if isinstance(segment, dict) else {}
        integrity = segment.get("integrity")
        if segment.get("type") != "crypt" or segment.get("encryption") != CIPHER:
            problems.append(f"the data segment is not encrypted with {CIPHER}")
        if not isinstance(integrity, dict) or integrity.get("type") != INTEGRITY_TYPE:
            problems.append(f"the data segment has no {INTEGRITY_TYPE} integrity")
        if str(segment.get("sector_size")) != str(SECTOR_SIZE):
            problems.append(f"the data segment's sectors are not {SECTOR_SIZE} bytes")
        if (
            not _within(segment.get("offset"), "0", 1 << 62)
            or int(segment.get("offset", 0)) < HEADER_AREA_BYTES
        ):
            problems.append("the data segment starts inside the header area")
    if doc.get("tokens"):
        problems.append("it has tokens")
    if config.get("requirements"):
        problems.append("it has requirements (reencryption?)")
    if problems:
        raise VolumeError(
            "the volume's LUKS2 header is not one this guest writes ("
            + "; ".join(problems)
            + "); left as it is, not opened"
        )


def _within(offset: object, size: object, limit: int) -> bool:
    """Whether [offset, offset + size) (decimal strings, as LUKS2 writes them) is in [0, limit)."""
    if not isinstance(offset, str) or not isinstance(size, str):
        return False
    if not (offset.isdigit() and size.isdigit()) or len(offset) > 20 or len(size) > 20:
        return False
    return int(offset) + int(size) <= limit


def check_active(status: str) -> None:
    """VolumeError unless the opened mapping (as the kernel holds it, `cryptsetup status`)
    encrypts with CIPHER and checks INTEGRITY_TYPE tags on SECTOR_SIZE sectors: the header
    read by `check_header` could have been swapped before `cryptsetup open` read it."""
    found: dict[str, str] = {}
    for line in status.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            found.setdefault(key.strip(), value.strip())
    want = {"cipher": CIPHER, "integrity": INTEGRITY_TYPE, "sector size": str(SECTOR_SIZE)}
    wrong = [f"{k} {found.get(k)!r}" for k, v in want.items() if found.get(k) != v]
    if wrong:
        raise VolumeError(
            "the opened volume is not what this guest formats (" + ", ".join(wrong) + "): closed"
        )


def zero_head_args(mapper: Path = MAPPER) -> list[str]:
    # Unwiped sectors read as I/O errors until written, and mke2fs reads back the first
    # block (it rewrites the superblock in 1 KiB pieces): written first, it reads fine.
    return ["dd", "if=/dev/zero", f"of={mapper}", "bs=1M", f"count={ZEROED_HEAD_MIB}",
            "conv=fsync"]  # fmt: skip


def mkfs_args(mapper: Path = MAPPER) -> list[str]:
    # No discard: dm-integrity takes none. lazy_itable_init: the kernel zeroes the inode
    # tables after mount (writes only), instead of mkfs writing them all now. No backup
    # superblocks (sparse_super2, none): mke2fs writes those 1 KiB at a time, so reads
    # back the unwiped 4 KiB around each; and a damaged primary is an I/O error here, not
    # something a backup should quietly stand in for.
    return ["mkfs.ext4", "-q", "-F", "-L", MAPPER_NAME, "-O", "sparse_super2",
            "-E", "nodiscard,lazy_itable_init=1,num_backup_sb=0", str(mapper)]  # fmt: skip


def mount_args(mountpoint: Path, mapper: Path = MAPPER) -> list[str]:
    return ["mount", "-t", "ext4", "-o", "nodev,nosuid", str(mapper), str(mountpoint)]


def integrity_status_args() -> list[str]:
    return ["dmsetup", "status", INTEGRITY_NAME]


def parse_integrity_status(output: str) -> int | None:
    """The mismatch count of a dm-integrity status line (`START LEN integrity MISMATCHES
    PROVIDED_SECTORS RECALC`), None if the output is not one."""
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "integrity" and fields[3].isdigit():
            return int(fields[3])
    return None


def count_kernel_errors(lines: Sequence[bytes]) -> int:
    """The kernel log lines that report a sector whose tag did not match."""
    return sum(1 for line in lines if _KERNEL_INTEGRITY_ERROR.search(line))


# LUKS2 keeps a second copy of its header at one of these offsets (cryptsetup's
# LUKS2_hdr_read tries them all): a volume with either copy is never formatted.
_LUKS_MAGIC = b"LUKS\xba\xbe"
_LUKS2_SECONDARY_MAGIC = b"SKUL\xba\xbe"
_LUKS2_SECONDARY_OFFSETS = tuple(16384 << shift for shift in range(9))  # 16 KiB .. 4 MiB


def header_magic(device: Path) -> bool:
    """Whether either LUKS header copy's magic is on the device. OSError when it cannot be
    read: an unreadable volume is never taken for an empty one."""
    fd = os.open(device, os.O_RDONLY)
    try:
        if os.pread(fd, 6, 0) == _LUKS_MAGIC:
            return True
        return any(
            os.pread(fd, 6, offset) == _LUKS2_SECONDARY_MAGIC for offset in _LUKS2_SECONDARY_OFFSETS
        )
    finally:
        os.close(fd)


def _failed(what: str, done: Completed) -> VolumeError:
    detail = (done.stderr.strip() or done.stdout.strip())[-300:]
    return VolumeError(f"{what} failed ({done.returncode}): {detail}")


class KernelLogWatch:
    """Counts the kernel's reports of sectors that failed their integrity check, from
    /dev/kmsg, in a thread (dm-crypt keeps no counter of its own; the kernel rate-limits
    these reports, so the count is a lower bound). Each one also goes to the console."""

    def __init__(self, path: Path = Path("/dev/kmsg"), log: Callable[[str], None] = print) -> None:
        self.path = path
        self.log = log
        self.errors = 0
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._follow, name="cvm-kmsg", daemon=True).start()

    def _follow(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self.log(f"volume: cannot follow the kernel log ({exc}): integrity errors uncounted")
            return
        while True:
            try:
                record = os.read(fd, 8192)  # one record per read
            except BrokenPipeError:
                continue  # overwritten records: read on from the oldest one left
            except OSError:
                return
            if not record:
                return
            if count_kernel_errors([record]):
                with self._lock:
                    self.errors += 1
                text = record.split(b";", 1)[-1].decode(errors="replace").strip()
                self.log(f"volume: INTEGRITY ERROR reported by the kernel: {text[:200]}")


class Volume:
    """The one data volume of this guest: opened once per boot, its state for `status`."""

    def __init__(
        self,
        runner: Runner = run_command,
        *,
        mapper: Path = MAPPER,
        watch: KernelLogWatch | None = None,
        find: Callable[[], Path | None] = find_device,
        has_magic: Callable[[Path], bool] = header_magic,
        header_copy: Path = HEADER_COPY,
        copy: Callable[[Path, Path], None] = copy_header,
    ) -> None:
        self.header_copy = header_copy
        self.copy = copy
        self.runner = runner
        self.has_magic = has_magic
        self.mapper = mapper
        self.watch = watch
        self.find = find
        self.outcome: str | None = None  # "formatted" | "opened" once open this boot
        self.error = ""
        self.opening = False
        self.lock = threading.Lock()

    def _run(
        self, args: Sequence[str], stdin: bytes | None = None, timeout: float = TIMEOUT_S
    ) -> Completed:
        return self.runner(args, stdin, timeout)

    def open(self, key: bytes, device: Path, mountpoint: Path) -> str:
        """Open (formatting a volume with no LUKS header at all) and mount; "formatted" or
        "opened". Idempotent: a second call with the same key changes nothing."""
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise VolumeError(f"the disk key must be {KEY_SIZE} bytes")
        check_mountpoint(mountpoint)
        with self.lock:
            self.opening = True
            try:
                outcome = self._open(key, device, mountpoint)
            except VolumeError as exc:
                self.error = str(exc)
                raise
            finally:
                self.opening = False
            self.error = ""
            return outcome

    def _open(self, key: bytes, device: Path, mountpoint: Path) -> str:
        if self.watch is not None:
            self.watch.start()
        if self.outcome is not None and self.mapper.exists():
            # Released again (a new seq): the volume stays as it is, but say if the key
            # changed, which would lock the renter out at the next boot.
            done = self._run(open_args(device, test_only=True), key)
            if done.returncode != 0:
                raise VolumeError("a different disk key than the one that opened the volume")
            self._mount(mountpoint)
            return self.outcome
        formatted = False
        if self._blank(device):
            # No LUKS header, neither copy: a new volume (or one the host wiped: the guest
            # starts afresh, empty, and says it formatted).
            done = self._run(format_args(device), key)
            if done.returncode != 0:
                raise _failed("formatting the volume", done)
            formatted = True
        if not self.mapper.exists():
            # The header is the host's to rewrite at any time (even right after luksFormat):
            # a copy is read once, checked, and is what cryptsetup opens with.
            header = self.header_copy
            try:
                try:
                    self.copy(device, header)
                except OSError as exc:
                    raise VolumeError(f"cannot read the volume's header: {exc.strerror}") from exc
                dumped = self._run(dump_args(header))
                if dumped.returncode != 0:
                    raise _failed("reading the volume's LUKS2 header", dumped)
                check_header(dumped.stdout)
                done = self._run(open_args(device, header=header), key)
            finally:
                header.unlink(missing_ok=True)
            if done.returncode == 2:  # cryptsetup: "No key available with this passphrase"
                raise VolumeError(
                    "the disk key does not open this volume (it was made with another key);"
                    " it is left as it is, not formatted"
                )
            if done.returncode != 0:
                raise _failed("opening the volume", done)
            active = self._run(active_status_args())
            try:
                if active.returncode != 0:
                    raise _failed("reading the opened volume's status", active)
                check_active(active.stdout)
            except VolumeError:
                self._run(close_args())
                raise
        if formatted:
            if not WIPE:
                done = self._run(zero_head_args(self.mapper))
                if done.returncode != 0:
                    raise _failed("writing the volume's first blocks", done)
            done = self._run(mkfs_args(self.mapper))
            if done.returncode != 0:
                raise _failed("making the file system", done)
        self._mount(mountpoint)
        self.outcome = "formatted" if formatted else "opened"
        return self.outcome

    def _blank(self, device: Path) -> bool:
        """No LUKS header at all: cryptsetup finds none (exit 1) and neither copy's magic is
        there. Any other answer (an unreadable device, a damaged header) is an error."""
        try:
            magic = self.has_magic(device)
        except OSError as exc:
            raise VolumeError(f"cannot read the volume's header: {exc.strerror}") from exc
        checked = self._run(is_luks_args(device))
        if checked.returncode == 0:
            return False
        if magic:
            raise VolumeError(
                "the volume has a LUKS header cryptsetup cannot read (damaged?); left as it is"
            )
        if checked.returncode != 1:
            raise _failed("checking the volume for a LUKS header", checked)
        return True

    def _mount(self, mountpoint: Path) -> None:
        if _mounted(mountpoint):
            return
        mountpoint.mkdir(mode=0o755, parents=True, exist_ok=True)
        done = self._run(mount_args(mountpoint, self.mapper))
        if done.returncode != 0:
            raise _failed(f"mounting the volume at {mountpoint}", done)

    def status(self) -> dict[str, Any]:
        """{"state": "absent|locked|opening|open|error", "formatted_at_boot": bool,
        "integrity_errors": N}: N counts dm-integrity's mismatches and the sectors the
        kernel reported as failing their tag (a lower bound: its reports are rate-limited)."""
        errors = self.watch.errors if self.watch is not None else 0
        if self.mapper.exists():
            done = self._run(integrity_status_args(), timeout=STATUS_TIMEOUT_S)
            errors += (parse_integrity_status(done.stdout) or 0) if done.returncode == 0 else 0
        if self.opening:
            state = "opening"
        elif self.outcome is not None and self.mapper.exists():
            state = "open"  # open and mounted; an error since (another key) comes beside it
        elif self.error:
            state = "error"
        elif self.find() is None:
            state = "absent"
        else:
            state = "locked"
        answer: dict[str, Any] = {
            "state": state,
            "formatted_at_boot": self.outcome == "formatted",
            "integrity_errors": errors,
        }
        if self.error:
            answer["error"] = self.error
        return answer


def _mounted(mountpoint: Path, mounts: Path = Path("/proc/mounts")) -> bool:
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[1:2] == [str(mountpoint)] for line in lines)


def _console(text: str) -> None:
    print(f"cvm-guest-agent: {text}", flush=True)


_VOLUME = Volume(watch=KernelLogWatch(log=_console))


def default_volume() -> Volume:
    """The guest's one volume (what `open_volume` and `volume_status` act on)."""
    return _VOLUME


def open_volume(key: bytes, device: Path, mountpoint: Path) -> str:
    """Open this guest's volume with `key` and mount it: "formatted" or "opened"."""
    return _VOLUME.open(key, device, mountpoint)


def volume_status() -> dict[str, Any]:
    """The volume's state, whether this boot formatted it, and integrity errors seen."""
    return _VOLUME.status()
