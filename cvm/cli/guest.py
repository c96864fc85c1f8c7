"""`cvm lease secrets put N` and `cvm lease ssh N`: into the guest a lease attested.

Both verify the lease's latest report here before anything else: AMD's chain (or, with
--trust-simulated-amd, the local stack's simulated AMD-SP, shown as SIMULATED), the lease's
expected measurement, REPORT_DATA bound to this lease, its nonce and the guest's key. Secrets
are sealed to that key; SSH pins the host key the report binds.
"""

from __future__ import annotations

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
)
from cvm.cli.renter import lease_app

if TYPE_CHECKING:
    from cvm.renter import Renter
    from cvm.secret_release import AttestedGuest

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
        try:
            result[name] = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"--secret {name}: cannot read {path} ({exc.strerror})") from None
    return result


def _roots(trust_simulated: bool) -> object:
    from cvm.config import get_settings
    from cvm.secret_release import trusted_roots

    return trusted_roots(trust_simulated, get_settings().sim_amd_dir)


def release_to_guest(
    renter: Renter,
    lease_id: int,
    *,
    ssh_keys: list[str],
    secrets: dict[str, bytes],
    trust_simulated: bool,
) -> dict[str, object]:
    """Verify the lease's guest and queue its sealed secrets; a JSON-able summary."""
    from cvm.secret_release import release

    guest, message_id = release(
        renter.chain,
        renter.signed_in_api(),
        lease_id,
        ssh_keys=ssh_keys,
        secrets=secrets,
        roots=_roots(trust_simulated),  # type: ignore[arg-type]
    )
    return {
        "lease_id": lease_id,
        "message_id": message_id,
        "sealed_to": "0x" + (guest.identity.hpke_public + guest.identity.ssh_public).hex(),
        "measurement": "0x" + guest.identity.measurement.hex(),
        "amd_root": guest.identity.amd_root.value,
        "secrets": sorted(secrets),
        "ssh_keys": len(ssh_keys),
    }


def _human(summary: dict[str, object]) -> str:
    simulated = summary["amd_root"] == "simulated"
    marker = " [bold yellow]SIMULATED AMD-SP[/bold yellow]" if simulated else ""
    return (
        f"sealed {len(summary['secrets'])} secret(s) and {summary['ssh_keys']} SSH key(s) to the"  # type: ignore[arg-type]
        f" attested guest of lease {summary['lease_id']}{marker}; its node delivers them"
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
    from cvm.cli.renter import open_renter, read_ssh_public_key

    secrets = read_secrets(secret)
    keys = [read_ssh_public_key(ssh_key)] if ssh_key is not None else []
    if not secrets and not keys:
        raise UsageError("nothing to send: give --secret NAME=FILE and/or --ssh-key")
    renter = open_renter(deployment, wallet, password_file)
    summary = release_to_guest(
        renter, lease_id, ssh_keys=keys, secrets=secrets, trust_simulated=trust_simulated
    )
    emit(summary, _human(summary))


@lease_app.command("ssh")
def ssh(
    lease_id: Annotated[int, typer.Argument(min=0, help="Lease id.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --).")] = None,
    identity: Annotated[
        Path | None, typer.Option("-i", "--identity", help="Private key for ssh.")
    ] = None,
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

    from cvm.cli.renter import open_renter
    from cvm.secret_release import attested_guest

    if shutil.which("ssh") is None:
        raise UsageError("no ssh client here (Debian: apt-get install openssh-client)")
    renter = open_renter(deployment, wallet, password_file)
    api = renter.signed_in_api()
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


lease_app.add_typer(secrets_app, name="secrets")
