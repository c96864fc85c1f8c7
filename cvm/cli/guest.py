"""`cvm lease secrets put|status N`, `cvm lease ssh N`, `cvm lease open|curl N PORT` and
`cvm lease logs N`: into the guest a lease attested, and what it printed.

The first ones verify the lease's latest report here before anything else: AMD's chain (or,
with --trust-simulated-amd, the local stack's simulated AMD-SP, shown as SIMULATED), the
lease's expected measurement, REPORT_DATA bound to this lease, its nonce and the guest's key,
HOST_DATA bound to this lease and its renter on chain. Secrets are sealed to that key and
signed by the renter's wallet with the next sequence number; SSH pins the host key the
report binds, `open`/`curl` the TLS key of the guest's service ports. `secrets status` asks
the guest (over that SSH) which sequence number it has installed, signed by its attested
signer, so an update the node withheld shows. `logs` shows the guest's serial console as
the node's host relayed it: untrusted, and said so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cvm.cli.plumbing import (
    CliError,
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
from cvm.cli.renting import lease_app, open_renter, read_secrets, read_ssh_public_key

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
    with_disk_key: bool = True,
) -> dict[str, object]:
    """Verify the lease's guest and queue its sealed secrets; a JSON-able summary.

    `retry` is what a refusal of the simulated AMD-SP tells the user to run instead.
    `with_disk_key` False: the lease's disk key comes from its threshold key instead."""
    from cvm.secret_release import release, volume_wanted

    api = renter.signed_in_api()
    if with_disk_key and threshold_keyed(renter, lease_id):
        with_disk_key = False  # its guest derives the disk key from the lease's root key
    disk = with_disk_key and volume_wanted(renter.chain, lease_id, workload_disk(api, lease_id))
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


def threshold_keyed(renter: Renter, lease_id: int) -> bool:
    """Whether the lease has a key policy on chain (`cvm rent --key-service`): its disk key
    then comes from its threshold key, never from this client's disk-key file."""
    keys = getattr(renter.chain, "keys", None)
    return keys is not None and keys.key_policy_of(lease_id) is not None


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
        if volume.get("error"):  # a later release it refused (another key)
            line += f" [bold red](then refused: {printable(str(volume['error']))})[/bold red]"
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


PortArgument = Annotated[
    int, typer.Argument(min=1, max=65535, help="The guest port (as the workload declares it).")
]


def _attested_port(lease_id: int, port: int, trust_simulated: bool, renter: Renter) -> object:
    from cvm.attested_tls import attested_port

    with _simulated_hint(trust_simulated):
        target = attested_port(
            renter.chain,
            renter.signed_in_api(),
            lease_id,
            port,
            roots=_roots(trust_simulated),  # type: ignore[arg-type]
        )
    if target.simulated:
        err().print("[yellow]attested by the SIMULATED AMD-SP (local stack only)[/yellow]")
    return target


@lease_app.command("open")
def open_port(
    lease_id: Annotated[int, typer.Argument(min=0, help="Lease id.")],
    port: PortArgument,
    trust_simulated: TrustSimulatedOption = False,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where a service port of the lease's guest is reached, and its attested TLS fingerprint.

    The fingerprint (SHA-256 of the TLS key's SubjectPublicKeyInfo) comes from the lease's
    latest report, verified here; the address from the node's signed announcement. A client
    must accept exactly that key (e.g. `curl --pinnedpubkey sha256//BASE64 -k`), or use
    `cvm lease curl` / `cvm.sdk.attested_client`, which do."""
    from cvm.attested_tls import AttestedPort

    target = _attested_port(
        lease_id, port, trust_simulated, open_renter(deployment, wallet, password_file)
    )
    assert isinstance(target, AttestedPort)
    data = target.as_dict()
    emit(
        data,
        f"lease {lease_id} port {port}: [bold]{printable(target.url)}[/bold]\n"
        f"attested TLS key: {data['fingerprint']}\n"
        f"  sha256 hex: {data['fingerprint_sha256']}",
    )


_METHOD = r"[A-Z]{1,16}"
MAX_SHOWN_BODY = 64 * 1024 * 1024


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
MAX_HEADER_FILE_BYTES = 64 * 1024
MAX_HEADERS = 64


def request_headers(given: list[str]) -> list[tuple[str, str]]:
    """`-H` values as (name, value): 'Name: value', or @FILE holding such lines (blank lines
    and #-comments skipped). UsageError for a malformed one; values are never echoed, since a
    header file exists to carry a secret."""
    lines: list[tuple[str, str]] = []
    for item in given:
        if item.startswith("@"):
            source = Path(item[1:]).expanduser()
            try:
                with source.open("rb") as handle:
                    raw = handle.read(MAX_HEADER_FILE_BYTES + 1)
            except OSError as exc:
                raise UsageError(f"-H {item}: cannot read it ({exc.strerror})") from None
            if len(raw) > MAX_HEADER_FILE_BYTES:
                raise UsageError(f"-H {item}: larger than {MAX_HEADER_FILE_BYTES} bytes")
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                raise UsageError(f"-H {item}: not UTF-8 text") from None
            lines += [
                (f"{item} line {number}", line.rstrip("\r"))
                for number, line in enumerate(text.split("\n"), 1)
                if line.strip() and not line.lstrip().startswith("#")
            ]
        else:
            lines.append(("-H", item))
    headers: list[tuple[str, str]] = []
    for where, line in lines:
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise UsageError(f"{where}: a header is 'Name: value' with a token for a name")
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            raise UsageError(f"{where}: header {name} holds control characters")
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            raise UsageError(f"{where}: {name} is set by the client itself")
        headers.append((name, value))
    if len(headers) > MAX_HEADERS:
        raise UsageError(f"at most {MAX_HEADERS} headers")
    return headers


@lease_app.command("curl")
def curl(
    lease_id: Annotated[int, typer.Argument(min=0, help="Lease id.")],
    port: PortArgument,
    path: Annotated[str, typer.Argument(help="Path and query, starting with /.")] = "/",
    method: Annotated[
        str | None,
        typer.Option("--request", "-X", help="HTTP method (default GET, or POST with -d)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Request body; @FILE reads it from a file."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="A request header 'Name: value' (repeatable); @FILE reads header lines from a"
            " file, which keeps a token off the command line.",
        ),
    ] = None,
    trust_simulated: TrustSimulatedOption = False,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """An HTTP request to a service port of the lease's guest, over TLS that only the attested
    guest can answer: the server must present the key the lease's verified report binds, or
    nothing is sent. Prints the body (with --json: status, headers and body)."""
    import json
    import sys

    import httpx

    from cvm.attested_tls import AttestedPort, pinned_client

    if not path.startswith("/") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in path):
        raise UsageError(f"PATH must start with / and hold no spaces or controls: {path!r}")
    verb = (method or ("POST" if data is not None else "GET")).upper()
    if not re.fullmatch(_METHOD, verb):
        raise UsageError(f"-X {method!r} is not an HTTP method")
    body: bytes | None = None
    if data is not None:
        if data.startswith("@"):
            try:
                body = Path(data[1:]).expanduser().read_bytes()
            except OSError as exc:
                raise UsageError(f"-d {data}: cannot read it ({exc.strerror})") from None
        else:
            body = data.encode()
    headers = request_headers(header or [])
    target = _attested_port(
        lease_id, port, trust_simulated, open_renter(deployment, wallet, password_file)
    )
    assert isinstance(target, AttestedPort)
    try:
        with pinned_client(target.host, target.host_port, target.spki_sha256) as http:
            with http.stream(verb, path, content=body, headers=headers) as answer:
                received = bytearray()
                for chunk in answer.iter_bytes():
                    received += chunk[: MAX_SHOWN_BODY - len(received)]
                    if len(received) >= MAX_SHOWN_BODY:
                        err().print(f"[yellow]body cut at {MAX_SHOWN_BODY} bytes[/yellow]")
                        break
    except httpx.HTTPError as exc:
        raise CliError(f"the request to {target.url}{path} failed: {exc}") from None
    content = bytes(received)
    if json_output():
        summary = {
            **target.as_dict(),
            "method": verb,
            "path": path,
            "status": answer.status_code,
            "headers": dict(answer.headers),
            "body": content.decode("utf-8", errors="replace"),
        }
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        sys.stdout.buffer.write(content)  # the attested guest's own answer, as curl prints it
        sys.stdout.flush()
        if answer.status_code >= 400:
            err().print(f"[yellow]HTTP {answer.status_code}[/yellow]")


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
