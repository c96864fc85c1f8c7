"""The renter's threshold-key commands: `cvm lease policy N` and `cvm lease rekey N`, and
what `cvm rent --key-service` runs once its lease exists (cvm.key_release does the crypto).

Everything the user typed is checked before a wallet is unlocked: hex measurements, the
threshold against the holders, secret names. Holders are checked against the chain (active:
registered and staked) before anything is signed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.plumbing import (
    AddressOption,
    CliError,
    DeploymentOption,
    JsonOption,
    PasswordFileOption,
    UsageError,
    WalletOption,
    emit,
    err,
    literal,
    out,
)
from cvm.cli.renting import lease_app, open_renter, read_secrets

if TYPE_CHECKING:
    from cvm.chain.key_service import KeyServiceClient
    from cvm.renter import Renter

MEASUREMENT_SIZE = 48
MAX_MEASUREMENTS = 8
MAX_HOLDERS = 16
DEFAULT_HOLDERS = 3
DEFAULT_THRESHOLD = 2
AUTO = "auto"

LeaseIdArg = Annotated[int, typer.Argument(help="The lease id.", min=1)]
AllowMeasurementOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-measurement",
        help="A launch measurement (96 hex digits) that may receive the key; repeatable.",
    ),
]
HoldersOption = Annotated[
    str | None,
    typer.Option(
        "--holders",
        help="Key holders: comma-separated addresses, or 'auto' (the first active staked ones).",
    ),
]
ThresholdOption = Annotated[
    int | None,
    typer.Option(
        "--threshold", help=f"Shares needed to rebuild the key (default {DEFAULT_THRESHOLD})."
    ),
]
AllowThresholdOneOption = Annotated[
    bool,
    typer.Option(
        "--allow-threshold-one",
        help="Accept --threshold 1: EVERY holder then holds the whole root key (any one of them,"
        " alone, can read the lease's disk, snapshots and secrets).",
    ),
]
ExportRootOption = Annotated[
    Path | None,
    typer.Option(
        "--export-root-key",
        help="Also write the root key to this new file (mode 0600); otherwise it is kept nowhere.",
    ),
]


def parse_measurement(text: str, option: str = "--allow-measurement") -> bytes:
    cleaned = text.strip().lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]*", cleaned) or len(cleaned) != 2 * MEASUREMENT_SIZE:
        raise UsageError(
            f"{option} {text[:120]!r}: a measurement is {MEASUREMENT_SIZE} bytes (96 hex digits)"
        )
    return bytes.fromhex(cleaned)


def parse_measurements(
    texts: Sequence[str] | None, option: str = "--allow-measurement"
) -> list[bytes]:
    found: list[bytes] = []
    for text in texts or []:
        value = parse_measurement(text, option)
        if value not in found:
            found.append(value)
    return found


def parse_holders(text: str | None) -> list[str] | None:
    """None for 'auto' (or nothing given); else the addresses, checked and distinct."""
    if text is None or text.strip().lower() == AUTO:
        return None
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    if not addresses:
        raise UsageError("--holders: name at least one address, or 'auto'")
    for address in addresses:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
            raise UsageError(f"--holders: {address[:60]!r} is not a 0x-prefixed 20-byte address")
    if len({a.lower() for a in addresses}) != len(addresses):
        raise UsageError("--holders: an address is named twice")
    if len(addresses) > MAX_HOLDERS:
        raise UsageError(f"--holders: at most {MAX_HOLDERS} holders")
    return addresses


THRESHOLD_ONE_WARNING = (
    "WARNING: threshold 1: every holder holds the WHOLE root key; any one of them alone can"
    " read this lease's disk, snapshots and secrets"
)


def check_threshold(threshold: int, holders: int, allow_one: bool = False) -> None:
    """From 1 to the number of holders; 1 (each share is the whole key: Shamir with t = 1
    hands every holder the secret itself) only with --allow-threshold-one."""
    if not 1 <= threshold <= holders:
        raise UsageError(
            f"--threshold {threshold}: it must be from 1 to the number of holders ({holders})"
        )
    if threshold == 1 and not allow_one:
        raise UsageError(
            "--threshold 1: every holder would hold the whole root key (no threshold at all);"
            " use 2 or more, or pass --allow-threshold-one to accept that"
        )


def warn_threshold_one(threshold: int) -> None:
    """Said on stderr (even with --json) whenever a threshold-1 key is deposited."""
    if threshold == 1:
        err().print(THRESHOLD_ONE_WARNING, style="bold red", highlight=False)


def check_secret_names(secrets: dict[str, bytes]) -> None:
    for name in secrets:
        if name.startswith("cvm."):
            raise UsageError(f"--secret {name}: cvm.* names are the guest's own")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", name):
            raise UsageError(f"--secret {name[:70]!r}: letters, digits, '.', '_', '-' (at most 64)")


class KeyRequest:
    """What `cvm rent --key-service` asked for, checked before the lease exists."""

    def __init__(
        self,
        holders: str | None,
        threshold: int | None,
        failover: bool,
        allow: Sequence[str] | None,
        secrets: dict[str, bytes],
        export_root: Path | None,
        allow_threshold_one: bool = False,
    ) -> None:
        self.holders = parse_holders(holders)
        count = len(self.holders) if self.holders is not None else DEFAULT_HOLDERS
        self.threshold = threshold if threshold is not None else min(DEFAULT_THRESHOLD, count)
        if self.holders is None and threshold is not None:
            count = max(count, threshold)
        self.count = count
        check_threshold(self.threshold, count, allow_threshold_one)
        self.failover = failover
        self.allowed = parse_measurements(allow)
        check_secret_names(secrets)
        if secrets:  # too large for the bundle: say so before the lease is paid for
            from cvm.key_release import KeyServiceError, seal_bundle

            try:
                seal_bundle(bytes(32), 0, 1, secrets)
            except KeyServiceError as exc:
                raise UsageError(f"--secret: {exc}") from None
        self.secrets = secrets
        if export_root is not None and export_root.expanduser().exists():
            raise UsageError(f"--export-root-key {export_root}: the file exists")
        self.export_root = export_root

    def measurements(self, expected: bytes) -> list[bytes]:
        found = [expected, *(m for m in self.allowed if m != expected)]
        if len(found) > MAX_MEASUREMENTS:
            raise UsageError(f"--allow-measurement: at most {MAX_MEASUREMENTS} measurements in all")
        return found


def require_key_service(renter: Renter) -> KeyServiceClient:
    keys = renter.chain.keys
    if keys is None:
        raise CliError("this deployment has no key service (no KeyService contract recorded)")
    return keys


def holders_for(renter: Renter, wanted: list[str] | None, count: int) -> list[Any]:
    """The holders, checked on chain (before anything is signed)."""
    from cvm.key_release import resolve_holders

    require_key_service(renter)
    return resolve_holders(renter.chain, wanted, count)


def deposit(
    renter: Renter,
    lease_id: int,
    request: KeyRequest,
    holders: list[Any],
    measurements: list[bytes],
) -> dict[str, Any]:
    """The key deposit and the chain's policy for a lease just created."""
    from cvm.key_release import deposit_keys

    result = deposit_keys(
        renter.chain,
        renter.signed_in_api(),
        lease_id,
        renter=renter.account,
        holders=holders,
        threshold=request.threshold,
        measurements=measurements,
        failover=request.failover,
        secrets=request.secrets,
        export_to=request.export_root,
    )
    return result.as_dict() | {"failover": request.failover,
                               "measurements": ["0x" + m.hex() for m in measurements]}  # fmt: skip


def deposit_text(view: dict[str, Any]) -> str:
    holders = ", ".join(view["holders"])
    text = (
        f"key version {view['key_version']} of lease {view['lease_id']}: {view['threshold']} of"
        f" {len(view['holders'])} holders ({holders}); {view['secrets']} secret(s) in the bundle;"
        f" failover {'allowed' if view['failover'] else 'not allowed'}"
    )
    if view.get("root_key_exported_to"):
        text += f"; root key written to {view['root_key_exported_to']} (keep it safe)"
    else:
        text += "; the root key is kept nowhere"
    return literal(text)


def _policy_view(lease_id: int, policy: Any, standings: Sequence[Any]) -> dict[str, Any]:
    staked = sum(1 for s in standings if s.staked)
    return {
        "lease_id": lease_id,
        "key_version": int(policy.key_version),
        "threshold": int(policy.threshold),
        "holders": [str(h) for h in policy.holders],
        # Each holder's standing on chain now (cvm.key_release.HolderStanding), share order.
        "holder_standings": [
            {"address": s.address, "standing": s.standing, "unlocks_at": s.unlocks_at}
            for s in standings
        ],
        "staked_holders": staked,
        # Fewer staked holders than the threshold: a rekey to staked ones is due.
        "below_threshold": staked < int(policy.threshold),
        "measurements": ["0x" + bytes(m).hex() for m in policy.measurements],
        "failover": bool(policy.failover),
        "manifest_hash": "0x" + bytes(policy.manifest_hash).hex(),
    }


def _standing_text(standing: dict[str, Any]) -> str:
    if standing["standing"] == "leaving":
        unlocks = datetime.fromtimestamp(standing["unlocks_at"], UTC)
        return f"leaving (its stake unlocks {unlocks:%Y-%m-%d %H:%M} UTC)"
    return str(standing["standing"])


def _policy_text(view: dict[str, Any]) -> str:
    lines = [
        f"lease {view['lease_id']}: key version {view['key_version']},"
        f" {view['threshold']} of {len(view['holders'])} holders,"
        f" failover {'allowed' if view['failover'] else 'not allowed'}",
        f"holders ({view['staked_holders']} staked):",
        *(f"  {s['address']}  {_standing_text(s)}" for s in view["holder_standings"]),
    ]
    if view["below_threshold"]:
        lines.append(
            f"WARNING: {view['staked_holders']} of the {view['threshold']} holders the key needs"
            " are still staked; if the others stop serving, no new guest of this lease can get"
            f" its key. Rekey to staked holders: cvm lease rekey {view['lease_id']} --holders auto"
        )
    lines += [
        "measurements allowed:",
        *(f"  {m}" for m in view["measurements"]),
        f"manifest {view['manifest_hash']}",
    ]
    return literal("\n".join(lines))


def _own_lease(renter: Renter, lease_id: int) -> None:
    lease = renter.chain.leases.get_lease(lease_id)
    if str(lease.renter).lower() != str(renter.account.address).lower():
        raise CliError(f"lease {lease_id} is not yours: only its renter changes its key policy")


@lease_app.command("policy")
def policy(
    lease_id: LeaseIdArg,
    allow: AllowMeasurementOption = None,
    remove: Annotated[
        list[str] | None,
        typer.Option(
            "--remove-measurement", help="A measurement to take off the list; repeatable."
        ),
    ] = None,
    failover: Annotated[
        bool | None,
        typer.Option(
            "--failover/--no-failover", help="Allow (or forbid) moving the lease to another node."
        ),
    ] = None,
    address: AddressOption = None,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the lease's key-release policy, or change it (its renter only): the measurements
    that may receive the key, and whether the lease may fail over."""
    added = parse_measurements(allow)
    removed = parse_measurements(remove, "--remove-measurement")
    changing = bool(added or removed) or failover is not None
    renter = open_renter(deployment, wallet, password_file, address=address, unlock=changing)
    keys = require_key_service(renter)
    current = keys.key_policy_of(lease_id)
    if current is None:
        raise CliError(f"lease {lease_id} has no key policy (rent with --key-service)")
    if changing:
        _own_lease(renter, lease_id)
        measurements = [bytes(m) for m in current.measurements]
        for value in removed:
            if value not in measurements:
                raise UsageError(f"--remove-measurement 0x{value.hex()}: not in the policy")
            measurements.remove(value)
        measurements += [m for m in added if m not in measurements]
        if not measurements:
            raise UsageError("the policy must allow at least one measurement")
        if len(measurements) > MAX_MEASUREMENTS:
            raise UsageError(f"a policy allows at most {MAX_MEASUREMENTS} measurements")
        if added or removed:
            keys.update_measurements(lease_id, measurements)
        if failover is not None and failover != bool(current.failover):
            keys.set_failover(lease_id, failover)
        current = keys.key_policy_of(lease_id)
        if current is None:  # the renter cannot remove a policy: only a broken RPC answers so
            raise CliError(f"lease {lease_id}: its key policy could not be read back")
    from cvm.key_release import holder_standings

    view = _policy_view(lease_id, current, holder_standings(renter.chain, current.holders))
    emit(view, lambda: _policy_text(view))


@lease_app.command("rekey")
def rekey(
    lease_id: LeaseIdArg,
    holders: HoldersOption = None,
    threshold: ThresholdOption = None,
    allow_threshold_one: AllowThresholdOneOption = False,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", help="NAME=FILE for the new version's bundle; repeatable."),
    ] = None,
    root_key: Annotated[
        Path | None,
        typer.Option(
            "--root-key",
            help="The current root key (from --export-root-key): carried over sealed, so a guest"
            " started under the new version still opens state sealed under the old one.",
        ),
    ] = None,
    export_root: ExportRootOption = None,
    deployment: DeploymentOption = None,
    wallet: WalletOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rotate the lease's root key: a new key version with new shares (the old ones open
    nothing new). The running guest moves its volume to the new key itself; see
    docs/key-release.md for state sealed under the old version."""

    wanted = parse_holders(holders)
    secrets = read_secrets(secret)
    check_secret_names(secrets)
    if export_root is not None and export_root.expanduser().exists():
        raise UsageError(f"--export-root-key {export_root}: the file exists")
    renter = open_renter(deployment, wallet, password_file)
    keys = require_key_service(renter)
    current = keys.key_policy_of(lease_id)
    if current is None:
        raise CliError(f"lease {lease_id} has no key policy to rotate (rent with --key-service)")
    _own_lease(renter, lease_id)
    previous = None
    if root_key is not None:
        from cvm.key_release import read_root

        version, value = read_root(root_key, lease_id)
        if version != int(current.key_version):
            raise UsageError(
                f"--root-key {root_key}: key version {version},"
                f" the lease's is {current.key_version}"
            )
        previous = (version, value)
    addresses = wanted if wanted is not None else [str(h) for h in current.holders]
    count = len(addresses)
    chosen_threshold = threshold if threshold is not None else min(int(current.threshold), count)
    check_threshold(chosen_threshold, count, allow_threshold_one)
    chosen = holders_for(renter, addresses, count)
    warn_threshold_one(chosen_threshold)
    from cvm.key_release import deposit_keys

    result = deposit_keys(
        renter.chain,
        renter.signed_in_api(),
        lease_id,
        renter=renter.account,
        holders=chosen,
        threshold=chosen_threshold,
        measurements=[bytes(m) for m in current.measurements],
        failover=bool(current.failover),
        secrets=secrets,
        previous_root=previous,
        export_to=export_root,
    )
    view = result.as_dict() | {"failover": bool(current.failover)}
    emit(view, lambda: deposit_text(view))
    if not secrets and not as_json:
        out().print(
            "note: the new key version's bundle carries no secrets: a guest started under it"
            " (after a failover) gets none; pass --secret again to keep them",
            highlight=False,
        )
