"""What every `cvm` command shares: options, output, the error edge, amounts, passwords.

One way to do each: `--json` and `emit` print results, `CliError` (or a layer's own error)
fails a command, `CliGroup` turns every error into one line at the CLI's edge, amounts
always use the token's decimals, and passwords come from a prompt or an owner-only file.
Heavy libraries (web3, eth-account, pydantic) are imported inside functions only, so that
`cvm --help` does not pay for them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from rich.console import Console

    from cvm.chain import ChainClient, Deployment
    from cvm.wallet import KeystoreInfo

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 refused or failed (one line says why and what to do); "
    "2 usage error (a bad option, amount or file)."
)
DEBUG_ENV = "CVM_DEBUG"  # set to 1 to see the traceback of an unexpected error


class CliError(Exception):
    """A command failed; `message` says why and what to do, `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CliError):
    """The user asked for something malformed (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


# --- the error edge ----------------------------------------------------------------------

# The one error type of each layer: module → class name. Checked through sys.modules, so
# the edge never imports a layer (an error of a module that was never imported cannot occur).
_LAYER_ERRORS: dict[str, str] = {
    "cvm.wallet": "WalletError",
    "cvm.chain.errors": "ChainError",
    "cvm.renter": "RenterError",
    "cvm.api_client": "ApiError",
    "cvm.attestation.errors": "AttestationError",
    "cvm.attested_tls": "AttestedTlsError",
    "cvm.images": "ImageError",
    "cvm.config": "SettingsError",
    "cvm.key_release": "KeyServiceError",
}


def register_layer_error(module: str, name: str) -> None:
    """Let the edge report `module.name` (and subclasses) as a one-line failure."""
    _LAYER_ERRORS[module] = name


def _layer_error(exc: BaseException) -> bool:
    for module_name, class_name in _LAYER_ERRORS.items():
        module = sys.modules.get(module_name)
        kind = getattr(module, class_name, None) if module is not None else None
        if isinstance(kind, type) and isinstance(exc, kind):
            return True
    return False


def _message(exc: BaseException) -> str:
    if type(exc).__name__ == "ApiError":
        return f"the backend answered: {exc}"
    return str(exc) or type(exc).__name__


_json_mode = [False]


def _remember_json(value: bool) -> bool:
    _json_mode[0] = _json_mode[0] or bool(value)
    return value


def report_failure(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one error line (and a JSON object with --json) and exit with `code`.

    Messages carry the backend's and the chain's words (an `ApiError`'s detail, a revert
    reason): shown through `literal`, as one line, with no terminal control and no markup."""
    if _json_mode[0]:
        sys.stdout.write(json.dumps({"error": message}) + "\n")  # JSON escapes every control
    err().print(f"[red]error:[/red] {literal(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class CliGroup(TyperGroup):
    """The root command: catches each layer's error once, so no traceback reaches a user."""

    def invoke(self, ctx: click.Context) -> Any:
        _json_mode[0] = False
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except CliError as exc:
            report_failure(exc.message, exc.code)
        except Exception as exc:
            if _layer_error(exc):
                # A layer error may say it is the user's fault (a bad setting: exit 2).
                report_failure(_message(exc), getattr(exc, "exit_code", EXIT_FAILED))
            if os.environ.get(DEBUG_ENV):
                raise
            if isinstance(exc, OSError):
                report_failure(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
            report_failure(
                f"unexpected {type(exc).__name__}: {exc} "
                f"(please report it; {DEBUG_ENV}=1 shows the traceback)"
            )


def new_app(help_text: str) -> typer.Typer:
    """The root Typer app: exit codes in its help, locals never printed, the error edge."""
    return typer.Typer(
        name="cvm",
        help=f"{help_text}\n\n{EXIT_CODES_HELP}",
        cls=CliGroup,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )


# --- options -----------------------------------------------------------------------------

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print JSON for scripts (amounts in base units, times as Unix s).",
                 callback=_remember_json),
]  # fmt: skip
DeploymentOption = Annotated[
    Path | None,
    typer.Option(
        "--deployment", help="Deployment record (default: CVM_DEPLOYMENT_FILE, in CVM_DATA_DIR)."
    ),
]
RpcOption = Annotated[
    str | None,
    typer.Option("--rpc", help="JSON-RPC endpoint (default: CVM_RPC_URL, else the record's)."),
]
WalletOption = Annotated[
    str | None,
    typer.Option("--wallet", "-w", help="Wallet name in the wallet directory, or a keystore path."),
]
AddressOption = Annotated[
    str | None,
    typer.Option("--address", help="Read-only: whose leases to show (no wallet needed)."),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file", help="Owner-only file with the keystore password (else a prompt)."
    ),
]


# --- untrusted text ----------------------------------------------------------------------

# Everything a terminal could act on: C0 controls (ESC starts every escape sequence: OSC 0
# retitles the window, OSC 52 writes the clipboard, CSI 2J clears the screen), DEL, the C1
# controls (U+009B is a one-character CSI to some terminals), and the bidirectional
# overrides and isolates that reorder what is shown (Trojan Source). The web console's
# `printable` (web/src/guest.js) is the same rule.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, multiline: bool = True) -> str:
    """Text from the backend, a node or a guest, safe to write to a terminal: every control
    character as `?`; CRLF as a newline, and newline and tab kept only when `multiline`
    (one-line fields and errors must not be able to fake a line of their own)."""
    if multiline:
        return _CONTROL_BUT_LINES.sub("?", text.replace("\r\n", "\n"))
    return _CONTROL.sub("?", text)


def literal(value: object, *, multiline: bool = False) -> str:
    """`value` (backend-, node- or chain-derived) for a Rich string: `printable`, and its
    `[...]` escaped so that it shows as typed instead of being read as markup (styles, links).

    Every such value goes through this (or `printable`, for text written without Rich)."""
    from rich.markup import escape

    return escape(printable(str(value), multiline=multiline))


# What Rich itself writes to a terminal: colours and styles (SGR), and the cursor moves and
# line erasures of live displays and progress bars. The consoles pass only these, so a value
# that reached Rich without `literal` still cannot retitle, clear or write the clipboard.
_RICH_OWN = re.compile(r"\x1b\[[0-9;]*[mABCDGK]|\x1b\[\?25[hl]|\r")


def _guard(text: str) -> str:
    own = _RICH_OWN.findall(text)
    parts = [_CONTROL_BUT_LINES.sub("?", piece) for piece in _RICH_OWN.split(text)]
    return "".join(part + sequence for part, sequence in zip(parts, [*own, ""], strict=True))


class _GuardedStream:
    """stdout or stderr (looked up at each write, as Rich does) behind `_guard`."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    @property
    def _target(self) -> Any:
        stream = sys.stderr if self._stderr else sys.stdout
        # A live display redirects sys.stdout to a proxy that prints through this console:
        # write past it, as Rich does with its own file, or each write would loop back here.
        return getattr(stream, "rich_proxied_file", stream)

    def write(self, text: str) -> int:
        return int(self._target.write(_guard(text)))

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        isatty = getattr(self._target, "isatty", None)
        try:
            return bool(isatty()) if isatty is not None else False
        except ValueError:  # a closed stream
            return False

    def fileno(self) -> int:
        return int(self._target.fileno())

    @property
    def encoding(self) -> str:
        return str(getattr(self._target, "encoding", None) or "utf-8")


# --- output ------------------------------------------------------------------------------

_consoles: dict[bool, Console] = {}


def _console(stderr: bool) -> Console:
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(file=_GuardedStream(stderr), stderr=stderr)  # type: ignore[arg-type]
    return _consoles[stderr]


def out() -> Console:
    """The console for results (stdout)."""
    return _console(False)


def err() -> Console:
    """The console for progress and errors (stderr)."""
    return _console(True)


def emit(data: Any, human: Callable[[], Any] | str | None = None) -> None:
    """Print `data` as JSON with --json; else print `human` (text, or a callable's rich output)."""
    if _json_mode[0] or human is None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return
    shown = human() if callable(human) else human
    # Text is never wrapped at the console's width (80 when not a terminal): a measurement,
    # an image id or a path split over two lines cannot be copied or used in a script.
    out().print(shown, highlight=False, soft_wrap=isinstance(shown, str))


def json_output() -> bool:
    """Whether this invocation was given --json."""
    return _json_mode[0]


# --- amounts, durations, times ------------------------------------------------------------

_BASE_SUFFIX = re.compile(r"(\d+)\s*(?:base|wei)")


def parse_amount(text: str, what: str, *, allow_zero: bool = False) -> Decimal | int:
    """Check an amount as typed: tokens ('12.5', a Decimal) or base units ('1000base', an int).

    Raises UsageError (exit 2) for anything else, before any wallet or chain is touched.
    """
    value = text.strip().lower()
    match = _BASE_SUFFIX.fullmatch(value)
    if match:
        amount: Decimal | int = int(match.group(1))
    else:
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise UsageError(
                f"{what} {text!r} is not an amount: tokens (12.5) or base units (1000base)"
            ) from None
        if not amount.is_finite():
            raise UsageError(f"{what} {text!r} is not a finite amount")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise UsageError(f"{what} {text!r} must be {'zero or ' if allow_zero else ''}positive")
    return amount


def base_units(amount: Decimal | int, decimals: int, what: str) -> int:
    """A checked amount in the token's base units (`decimals` read from the token)."""
    if isinstance(amount, int):
        scaled = Decimal(amount)
    else:
        scaled = amount.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise UsageError(f"{what} {amount} has more than the token's {decimals} decimals")
    if scaled >= 2**256:
        raise UsageError(f"{what} {amount} is too large")
    return int(scaled)


def format_amount(base: int, decimals: int) -> str:
    """Base units → '12.5 tokens'."""
    return f"{Decimal(base).scaleb(-decimals).normalize():f} tokens"


# Prices on chain are base units per second (a node's per vCPU, a lease's for the whole VM);
# renters think in tokens per hour for the size they rent. Both are shown, the hour first.
SECONDS_PER_HOUR = 3600
_RATE_UNIT = re.compile(r"(.*?)\s*/\s*(s|h)")


def parse_rate(text: str, what: str, decimals: int) -> int:
    """A price as typed → base units per second: tokens per hour ('0.072/h'), tokens per
    second ('0.00002/s', or a bare number, as before), or base units ('1000base/s').

    Per hour is rounded down to whole base units per second: never more than was said."""
    match = _RATE_UNIT.fullmatch(text.strip().lower())
    amount, unit = (match.group(1), match.group(2)) if match else (text, "s")
    typed = parse_amount(amount, what)
    if unit == "s":
        return base_units(typed, decimals, what)
    per_hour = Decimal(typed) if isinstance(typed, int) else typed.scaleb(decimals)
    base = int(per_hour // SECONDS_PER_HOUR)
    if base == 0:
        raise UsageError(f"{what} {text!r} is less than one base unit per second")
    if base >= 2**256:
        raise UsageError(f"{what} {text!r} is too large")
    return base


def check_rate(text: str, what: str) -> None:
    """Check a typed price before any wallet or chain is touched (UsageError if malformed)."""
    match = _RATE_UNIT.fullmatch(text.strip().lower())
    parse_amount(match.group(1) if match else text, what)


def format_rate(per_second: int, decimals: int) -> str:
    """Base units per second → '0.072 tokens/h (20000000000000 base/s)'."""
    per_hour = format_amount(per_second * SECONDS_PER_HOUR, decimals).removesuffix(" tokens")
    return f"{per_hour} tokens/h ({per_second} base/s)"


def parse_duration(text: str, what: str = "duration") -> int:
    """'90', '90s', '15m', '2h', '1d' → seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise UsageError(f"{what} {text!r} is not like 90s, 15m, 2h or 1d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * unit


def format_duration(seconds: int) -> str:
    """Seconds → '45 s', '12 min', '3 h 20 min', '4 d 2 h'."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def format_time(unix: int, now: float | None = None) -> str:
    """Unix seconds → '2026-01-02 03:04:05 UTC (5 min ago)'; 0 → '-'."""
    if not unix:
        return "-"
    when = datetime.fromtimestamp(unix, UTC)
    delta = int((now if now is not None else datetime.now(UTC).timestamp()) - unix)
    span = abs(delta)
    if span < 120:
        ago = f"{span} s"
    elif span < 7200:
        ago = f"{span // 60} min"
    elif span < 172800:
        ago = f"{span // 3600} h"
    else:
        ago = f"{span // 86400} d"
    relative = f"{ago} ago" if delta >= 0 else f"in {ago}"
    return f"{when:%Y-%m-%d %H:%M:%S} UTC ({relative})"


# --- passwords and wallets -----------------------------------------------------------------


def password(password_file: Path | None, *, label: str = "Keystore password",
             confirm: bool = False) -> str:  # fmt: skip
    """A password from an owner-only file, else from a hidden prompt (never argv or env)."""
    from cvm.wallet import resolve_password

    def prompt(text: str) -> str:
        return str(typer.prompt(text, hide_input=True))

    return resolve_password(password_file, prompt, label=label, confirm=confirm)


def unlock_keystore(path: Path, password_file: Path | None,
                    label: str = "Keystore password") -> LocalAccount:  # fmt: skip
    from cvm.wallet import load_account

    return load_account(path, password(password_file, label=label))


def wallet_dir() -> Path:
    from cvm.config import get_settings

    return get_settings().wallet_dir


def find_wallet(wallet: str | None) -> KeystoreInfo:
    """The keystore named (a path, or a name in the wallet directory), or the only one."""
    from cvm.wallet import WalletError, list_keystores, read_keystore_info

    directory = wallet_dir()
    if wallet is not None:
        path = Path(wallet)
        if not path.is_file():
            path = directory / f"{wallet}.json"
        if not path.exists():
            raise WalletError(f"no wallet {wallet!r} (looked for {path}): see `cvm wallet list`")
        return read_keystore_info(path)  # names a damaged file as "not a keystore"
    wallets = list_keystores(directory)
    if len(wallets) == 1:
        return wallets[0]
    if not wallets:
        raise WalletError(f"no wallet in {directory}: `cvm wallet new NAME` first")
    names = ", ".join(k.path.stem for k in wallets)
    raise WalletError(f"several wallets ({names}): choose one with --wallet")


def checksum_address(value: str, what: str) -> str:
    """`value` as a checksummed address; UsageError if it is not one."""
    from eth_utils import is_address, to_checksum_address

    if not is_address(value):
        raise UsageError(f"{what} is not an address: {value}")
    return str(to_checksum_address(value))


# --- deployment and chain -------------------------------------------------------------------


def load_deployment(path: Path | None) -> Deployment:
    """The deployment record at `path` or the configured one, with a message naming the cause."""
    from cvm.chain import Deployment
    from cvm.config import get_settings

    chosen = path or get_settings().deployment_file
    if not chosen.exists() and path is None:
        raise CliError(
            f"no deployment record at {chosen}: start a local stack with `cvm up`, "
            "or pass --deployment"
        )
    return Deployment.load(chosen)


def connect_chain(deployment: Deployment, account: LocalAccount | None = None,
                  rpc: str | None = None) -> ChainClient:  # fmt: skip
    """The one chain client (cvm.chain.connect), after checking the record's contracts."""
    from cvm.chain import connect

    client = connect(deployment, account, rpc_url=rpc)
    check_contracts(client)
    return client


def check_contracts(client: ChainClient) -> None:
    """Each address of the record answers as the contract it is named for (CliError if not)."""
    record = client.deployment
    probes: list[tuple[str, str, Callable[[], object]]] = [
        ("LeaseMarket", record.lease_market, client.leases.next_lease_id),
        ("NodeRegistry", record.node_registry, client.nodes.min_stake),
        ("AttestationRegistry", record.attestation_registry,
         lambda: client.attestations.attestation_of(0)),
    ]  # fmt: skip
    for name, address, probe in probes:
        try:
            probe()
        except Exception:
            raise CliError(
                f"the deployment record's {name} address {address} does not answer as a "
                f"{name} on chain {record.chain_id}: the record belongs to another deployment"
            ) from None
