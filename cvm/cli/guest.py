"""`cvm lease secrets put|status N`, `cvm lease ssh N` and `cvm lease logs N`: into the guest
a lease attested, and what it printed.

The first ones verify the lease's latest report here before anything else: AMD's chain (or,
with --trust-simulated-amd, the local stack's simulated AMD-SP, shown as SIMULATED), the
lease's expected measurement, REPORT_DATA bound to this lease, its nonce and the guest's key,
HOST_DATA bound to this lease and its renter on chain. Secrets are sealed to that key and
signed by the renter's wallet with the next sequence number; SSH pins the host key the
report binds. `secrets status` asks the guest (over that SSH) which sequence number it has
installed, signed by its attested signer, so an update the node withheld shows. `logs` shows
the guest's serial console as the node's host relayed it: untrusted, and said so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cvm.cli.plumbing import (
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    UsageError,
    WalletOption,
    emit,
    err,
    json_output,
    printable,  # a hostile host must not drive the renter's terminal (see `printable`)
)
from cvm.cli.renting import lease_app, open_renter, read_ssh_public_key

if TYPE_CHECKING:
    from cvm.api_client import ApiClient
    from cvm.api_models import LeaseConsoleView
    from cvm.renter import Renter
    from cvm.secret_release import AttestedGuest, DiskKeys, SeqLedger

secrets_app = typer.Typer(help="Secrets for a lease's attested guest.", no_args_is_help=True)

TrustSimulatedOption = Annotated[
    bool,
    typer.Option(
        "--trust-simulated-amd",
        help="Also accept reports of the local stack's simulated AMD-SP (demos only: they"
        " prove nothing about real hardware).",
    ),
]
SecretOption = Annotated[
    list[str] | None,
    typer.Option("--secret", help="NAME=FILE: a file the guest gets at /run/cvm/secrets/NAME."),
]
SshKeyOption = Annotated[
    Path | None, typer.Option("--ssh-key", help="SSH public key file to install for root.")
]


def read_secrets(specs: list[str] | None) -> dict[str, bytes]:
    """NAME=FILE pairs, read now (UsageError for a bad pair or an unreadable file)."""
    result: dict[str, bytes] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--secret {spec!r}: use NAME=FILE")
        if name in result:
            raise UsageError(f"--secret {name} is given twice")
        if name == DISK_KEY_NAME:
            raise UsageError(f"--secret {name}: this client makes and keeps the disk key itself")
        try:
            result[name] = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"--secret {name}: cannot read {path} ({exc.strerror})") from None
    return result


DISK_KEY_NAME = "cvm.disk_key"  # = cvm.secret_release.DISK_KEY (imported lazily there)


def _roots(trust_simulated: bool) -> object:
    from cvm.config import get_settings
    from cvm.secret_release import trusted_roots

    return trusted_roots(trust_simulated, get_settings().sim_amd_dir)


@contextmanager
def _simulated_hint(
    trust_simulated: bool, retry: str = "pass --trust-simulated-amd"
) -> Iterator[None]:
    """A refusal for the simulated AMD-SP's root says how a local stack is trusted (`retry`)."""
    from cvm.attestation.release import ReleaseRefused

    try:
        yield
    except ReleaseRefused as exc:
        if trust_simulated or "simulated AMD-SP" not in str(exc):
            raise
        raise ReleaseRefused(f"{exc}; for the local `cvm up` stack {retry}") from None


def release_to_guest(
    renter: Renter,
    lease_id: int,
    *,
    ssh_keys: list[str],
    secrets: dict[str, bytes],
    trust_simulated: bool,
    retry: str = "pass --trust-simulated-amd",
) -> dict[str, object]:
    """Verify the lease's guest and queue its sealed secrets; a JSON-able summary.

    `retry` is what a refusal of the simulated AMD-SP tells the user to run instead."""
    from cvm.secret_release import release, volume_wanted

    api = renter.signed_in_api()
    disk = volume_wanted(renter.chain, lease_id, workload_disk(api, lease_id))
    with _simulated_hint(trust_simulated, retry):
        released = release(
            renter.chain,
            api,
            lease_id,
            renter=renter.account,
            ssh_keys=ssh_keys,
            secrets=secrets,
            roots=_roots(trust_simulated),  # type: ignore[arg-type]
            ledger=seq_ledger(),
            disk_keys=disk_keys() if disk else None,
        )
    guest = released.guest
    return {
        "disk_key": disk,
        "lease_id": lease_id,
        "message_id": released.message_id,
        "seq": released.seq,
        "sealed_to": "0x" + guest.identity.guest_key.hex(),
        "signer": guest.identity.signer,
        "measurement": "0x" + guest.identity.measurement.hex(),
        "amd_root": guest.identity.amd_root.value,
        "secrets": sorted(secrets),
        "ssh_keys": len(ssh_keys),
    }


def seq_ledger() -> SeqLedger:
    """This machine's record of the sequence numbers its renters sealed with."""
    from cvm.config import get_settings
    from cvm.secret_release import SeqLedger

    return SeqLedger(get_settings().data_dir / "sealed-seq.json")


def disk_keys() -> DiskKeys:
    """This machine's disk keys of its renters' leases (0600, beside the seq ledger)."""
    from cvm.config import get_settings
    from cvm.secret_release import DiskKeys

    return DiskKeys(get_settings().data_dir / "disk-keys.json")


def workload_disk(api: ApiClient, lease_id: int) -> bool:
    """Whether the lease's image (its private spec names it) declares a disk in its workload
    (manifest `workload.disk`), from the image directory here, else the backend's manifest.
    Either way only a hint of what the measured image holds: the key goes to the attested
    guest only, which opens a volume if it has one."""
    from cvm.api_client import ApiError

    try:
        image = api.lease_spec(lease_id).image
    except ApiError:
        return False
    return image_workload_disk(api, image)


def image_workload_disk(api: ApiClient | None, image: str) -> bool:
    """Whether image `image` declares a disk in its workload (`workload_disk`)."""
    import json

    from cvm.api_client import ApiError
    from cvm.config import get_settings
    from cvm.images import ImageError, ImageStore

    manifest: object = None
    try:
        stored = ImageStore(get_settings().image_dir).get(image, deep=False)
        manifest = json.loads((stored.directory / "manifest.json").read_text())
    except (ImageError, OSError, ValueError):
        if api is None:
            return False
        try:
            manifest = api.image_manifest(image).model_dump()
        except ApiError:
            return False
    workload = manifest.get("workload") if isinstance(manifest, dict) else None
    return isinstance(workload, dict) and bool(workload.get("disk"))


def _human(summary: dict[str, object]) -> str:
    simulated = summary["amd_root"] == "simulated"
    marker = " [bold yellow]SIMULATED AMD-SP[/bold yellow]" if simulated else ""
    disk = " and the disk key" if summary.get("disk_key") else ""
    return (
        f"sealed {len(summary['secrets'])} secret(s), {summary['ssh_keys']} SSH key(s){disk} to"  # type: ignore[arg-type]
        f" the attested guest of lease {summary['lease_id']}{marker} (seq {summary['seq']});"
        " its node delivers them"
    )


@secrets_app.command("put")
def put(
    lease_id: Annotated[int, typer.Argument(min=0, help="Lease id.")],
    secret: SecretOption = None,
    ssh_key: SshKeyOption = None,
    trust_simulated: TrustSimulatedOption = False,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify the lease's guest, seal secrets (and an SSH key) to it, send the ciphertext."""
    secrets = read_secrets(secret)
    keys = [read_ssh_public_key(ssh_key)] if ssh_key is not None else []
    renter = open_renter(deployment, wallet, password_file)
    if not secrets and not keys and not _disk_lease(renter, lease_id):
        raise UsageError("nothing to send: give --secret NAME=FILE and/or --ssh-key")
    summary = release_to_guest(
        renter, lease_id, ssh_keys=keys, secrets=secrets, trust_simulated=trust_simulated
    )
    emit(summary, _human(summary))


def _disk_lease(renter: Renter, lease_id: int) -> bool:
    """Whether releases to the lease carry its disk key (then a bare `put` re-sends it)."""
    from cvm.secret_release import volume_wanted

    return volume_wanted(renter.chain, lease_id, workload_disk(renter.signed_in_api(), lease_id))


IdentityOption = Annotated[
    Path | None, typer.Option("-i", "--identity", help="Private key for ssh.")
]


@secrets_app.command("status")
def status(
    lease_id: Annotated[int, typer.Argument(min=0, help="Lease id.")],
    identity: IdentityOption = None,
    trust_simulated: TrustSimulatedOption = False,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which sealed message the guest has installed, in its attested signer's own words.

    Without -i: the guest's signed status as its node relayed it (the node can show an older
    one, never a higher seq than the guest installed). With -i KEY: asked over SSH (host key
    pinned to the attestation) for a fresh challenge. Either way compared with the last seq
    sealed from here and the last one the backend queued: lower means the node has not
    delivered (or withholds) an update."""
    import subprocess
    import tempfile

    from cvm.cli.renting import open_renter
    from cvm.secret_release import attested_guest, guest_status_with_volume, relayed_status

    renter = open_renter(deployment, wallet, password_file)
    api = renter.signed_in_api()
    with _simulated_hint(trust_simulated):
        guest = attested_guest(
            renter.chain,
            api,
            lease_id,
            roots=_roots(trust_simulated),  # type: ignore[arg-type]
        )
        installed: int | None
        volume: dict[str, object] | None = None
        if identity is None:
            source = "node"
            installed = relayed_status(api, guest.identity)
        else:
            source = "ssh"
            access = api.guest_access(lease_id)
            with tempfile.TemporaryDirectory(prefix="cvm-ssh-") as work:
                known_hosts = Path(work) / "known_hosts"
                known_hosts.write_text(
                    guest.identity.known_hosts_line(access.host, access.ssh_port)
                )

                def run(command: list[str]) -> str:
                    argv = ssh_argv(known_hosts, access.host, access.ssh_port, identity, command)
                    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
                    if done.returncode != 0:
                        raise UsageError(
                            f"ssh into the guest failed ({done.returncode}):"
                            f" {printable(done.stderr.strip()[-300:])}"
                        )
                    return done.stdout

                installed, volume = guest_status_with_volume(guest.identity, run)
    sent = seq_ledger().last(guest.identity)
    queued = api.sealed_secrets_seq(lease_id)
    latest = max(sent, queued)
    withheld = latest > (installed or 0)
    summary = {
        "lease_id": lease_id,
        "installed_seq": installed,
        "sent_seq": sent,
        "queued_seq": queued,
        "withheld": withheld,
        "source": source,
        "signer": guest.identity.signer,
        "amd_root": guest.identity.amd_root.value,
        # Only over SSH (-i): the node relays the signed seq alone.
        "volume": volume,
    }
    volume_warning = disk_keys().note_volume(guest.identity, volume) if volume else None
    if volume_warning:
        summary["volume_warning"] = volume_warning
    if installed is None:
        human = f"the node of lease {lease_id} has relayed no status of its guest yet"
        if latest:
            human += f" ([bold red]seq {latest} was sent[/bold red]; try -i KEY to ask over SSH)"
    elif withheld:
        human = (
            f"[bold red]the guest of lease {lease_id} has installed seq {installed}, but seq"
            f" {latest} was sent[/bold red]: its node has not delivered it (yet), or withholds it"
        )
    else:
        # Only the latest: the guest takes any higher seq, so a node can skip one (README).
        human = (
            f"the guest of lease {lease_id} has installed seq {installed}, the latest sent"
            " (an earlier message it skipped would not show here)"
        )
    human += _volume_human(volume, volume_warning)
    emit(summary, human)


def _volume_human(volume: dict[str, object] | None, warning: str | None) -> str:
    """The data volume's line of `secrets status` (empty without a volume answer)."""
    if volume is None:
        return ""
    state = volume["state"]
    if state == "open":
        how = "formatted (new and empty) at this boot" if volume["formatted_at_boot"] else "opened"
        line = f"\ndata volume: {how}"
    elif state == "error":
        reason = printable(str(volume.get("error", "")))
        line = f"\n[bold red]data volume: not opened: {reason}[/bold red]"
    else:
        line = f"\ndata volume: {state}"
    errors = volume["integrity_errors"]
    if errors:
        line += (
            f"\n[bold red]{errors} block(s) failed their integrity check: the node changed the"
            " volume's data (the guest refused to read it)[/bold red]"
        )
    if warning:
        line += f"\n[bold red]{warning}[/bold red]"
    return line


@lease_app.command("ssh")
def ssh(
    lease_id: Annotated[int, typer.Argument(min=0, help="Lease id.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --).")] = None,
    identity: IdentityOption = None,
    trust_simulated: TrustSimulatedOption = False,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
) -> None:
    """SSH into the lease's guest as root, pinning the host key its attestation binds."""
    import os
    import shutil
    import subprocess
    import tempfile

    from cvm.secret_release import attested_guest

    if shutil.which("ssh") is None:
        raise UsageError("no ssh client here (Debian: apt-get install openssh-client)")
    renter = open_renter(deployment, wallet, password_file)
    api = renter.signed_in_api()
    with _simulated_hint(trust_simulated):
        guest: AttestedGuest = attested_guest(
            renter.chain,
            api,
            lease_id,
            roots=_roots(trust_simulated),  # type: ignore[arg-type]
        )
    access = api.guest_access(lease_id)
    if guest.simulated:
        err().print("[yellow]attested by the SIMULATED AMD-SP (local stack only)[/yellow]")
    with tempfile.TemporaryDirectory(prefix="cvm-ssh-") as work:
        known_hosts = Path(work) / "known_hosts"
        known_hosts.write_text(guest.identity.known_hosts_line(access.host, access.ssh_port))
        argv = ssh_argv(known_hosts, access.host, access.ssh_port, identity, command or [])
        done = subprocess.run(argv, check=False, env=os.environ.copy())
    raise typer.Exit(done.returncode)


def ssh_argv(
    known_hosts: Path, host: str, port: int, identity: Path | None, command: list[str]
) -> list[str]:
    """ssh to root@host:port trusting only the host key in `known_hosts` (the attested one)."""
    argv = ["ssh", "-p", str(port),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20"]  # fmt: skip
    if identity is not None:
        argv += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    if command:
        argv += ["-o", "BatchMode=yes"]
    return [*argv, f"root@{host}", *command]


UNTRUSTED_CONSOLE = (
    "guest console as relayed by the node's host: UNTRUSTED (the host sees and can alter it;"
    " only the attestation and `cvm lease ssh` are proof)"
)
FOLLOW_INTERVAL_S = 2.0


def _show(view: LeaseConsoleView, since: int, *, always: bool) -> None:
    """Print one read of the console: raw JSON lines, or sanitized text on stdout."""
    import json
    import sys

    if json_output():
        if view.text or always:
            data = view.model_dump(mode="json") | {"trusted": False}
            sys.stdout.write(json.dumps(data) + "\n")
    else:
        if view.start > since:
            err().print(f"[dim]… {view.start - since} earlier bytes are no longer kept …[/dim]")
        sys.stdout.write(printable(view.text))
    sys.stdout.flush()


@lease_app.command("logs")
def logs(
    lease_id: Annotated[int, typer.Argument(min=0, help="Lease id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output until the lease ends.")
    ] = False,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the guest's serial console (the last 256 KiB the backend keeps).

    UNTRUSTED: the node's host reads the console and relays it, so it sees every byte and could
    change any. Use it to debug a boot, never as proof of what runs (the attestation is that).
    With --json: one object (with --follow, one more per read that brought new output)."""
    import time

    from cvm.chain import LeaseStatus

    renter = open_renter(deployment, wallet, password_file)
    api = renter.signed_in_api()
    if not json_output():
        err().print(f"[yellow]{UNTRUSTED_CONSOLE}[/yellow]", highlight=False)
    view = api.lease_console(lease_id)
    _show(view, 0, always=True)
    if view.end == 0 and not json_output():
        err().print("[dim](no console output from the node yet)[/dim]", highlight=False)
    while follow:
        # Closed: one last read for what arrived before the close, then done.
        closed = renter.chain.leases.get_lease(lease_id).status == LeaseStatus.CLOSED
        if not closed:
            try:
                time.sleep(FOLLOW_INTERVAL_S)
            except KeyboardInterrupt:
                return
        since = view.end
        view = api.lease_console(lease_id, since=since)
        _show(view, since, always=False)
        if closed:
            return


lease_app.add_typer(secrets_app, name="secrets")
