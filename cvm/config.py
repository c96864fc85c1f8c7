"""The one settings object of cvm, read from the environment (prefix CVM_) and a settings file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

SETTINGS_FILE_ENV = "CVM_SETTINGS_FILE"
MEASUREMENT_BYTES = 48  # an SEV-SNP launch measurement (SHA-384)
DEFAULT_SETTINGS_FILE = "cvm.env"


class Settings(BaseSettings):
    """Configuration shared by the CLI, the backend and the node agent.

    Every field can be set as an environment variable `CVM_<FIELD>` or in the settings
    file named by `CVM_SETTINGS_FILE` (default `cvm.env` in the working directory); the
    environment wins. Every local path defaults to a place under `data_dir`, which is
    absolute, so that each command finds the same files from any working directory.
    """

    model_config = SettingsConfigDict(env_prefix="CVM_", extra="ignore")

    # --- local state (declared first: the path defaults below are made from it) ----
    data_dir: Path = Field(
        Path("~/.cvm"),
        validate_default=True,
        description="local state: wallets, deployment record, store, simulated AMD roots, logs",
    )

    # --- chain -------------------------------------------------------------------
    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC endpoint of the chain")
    deployment_file: Path = Field(
        default_factory=lambda data: data["data_dir"] / "deployment.json",
        description="deployment record: chain id, RPC and API URLs, contract addresses",
    )
    anvil_bin: Path | None = Field(
        None, description="anvil executable for local chains (default: the repo's npm one, PATH)"
    )

    # --- backend (owned by backend/) ------------------------------------------------------
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['data_dir'] / 'backend.db'}",
        description="SQLAlchemy URL of the backend store (SQLite embedded, PostgreSQL in prod)",
    )
    broker_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Celery broker the backend dispatches leases to"
    )
    api_url: str = Field("http://127.0.0.1:8000", description="base URL of the backend API")
    api_public_host: str = Field(
        "localhost:8000", description="host[:port] renters see; the SIWE domain they sign for"
    )
    evidence_max_bytes: int = Field(
        131072, description="largest evidence bundle the API stores (report + VCEK + chain)"
    )
    heartbeat_window_s: int = Field(
        120, description="a signed heartbeat's timestamp must be this close to the server clock"
    )
    heartbeat_stale_s: int = Field(
        20,
        description="a node whose last heartbeat is older than this is not matched, and its"
        " reservations go to the next node (one agent heartbeat interval plus delivery slack)",
    )
    session_ttl_s: int = Field(86400, description="lifetime of a SIWE session token")
    siwe_nonce_ttl_s: int = Field(300, description="time to answer a SIWE login challenge")
    indexer_start_block: int = Field(0, description="first block the indexer reads")
    indexer_confirmations: int = Field(
        2, description="blocks an event must be buried under before the indexer applies it"
    )
    dispatch_at_head: bool = Field(
        True,
        description="match and dispatch a lease as soon as its creation is in a block, before"
        " the indexer's confirmations (the chain refuses to accept a lease a reorg dropped; the"
        " reservation then expires); off: dispatch waits for the indexer",
    )
    indexer_batch_blocks: int = Field(500, description="blocks per eth_getLogs request")
    indexer_poll_s: float = Field(
        1.0,
        description="pause between indexer polls at the head (the fallback: new blocks are"
        " followed by subscription when the WebSocket endpoint answers)",
    )
    indexer_ws_url: str | None = Field(
        None,
        description="WebSocket endpoint for eth_subscribe newHeads (default: the RPC URL as"
        " ws:// or wss://)",
    )
    api_attestation_cache_s: float = Field(
        1.0, description="seconds an attestation-status answer may be served from cache (0: off)"
    )
    leader_ttl_s: float = Field(
        3.0,
        description="replicas: a dead leader's indexer or verifier job is taken over after this",
    )
    api_trusted_proxies: str = Field(
        "127.0.0.1",
        description="comma-separated IPs of reverse proxies whose X-Forwarded-For is believed",
    )
    api_max_body_bytes: int = Field(
        65536,
        description="largest request body except evidence and image uploads, refused before it"
        " is read",
    )
    image_max_bytes: int = Field(
        268435456,
        ge=1,
        description="largest image the API accepts (the uploaded tar) and a node agent downloads"
        " (256 MiB; the cvm guest image is about 57 MiB)",
    )
    image_store_max_bytes: int = Field(
        8 * 2**30,
        ge=1,
        description="room the backend's image store may take; an upload that would pass it is"
        " refused (507) instead of filling the disk (8 GiB)",
    )
    image_renter_quota_bytes: int = Field(
        2**30,
        ge=1,
        description="room one renter's uploaded images may take in the backend's store; an"
        " upload that would pass it is refused (413) (1 GiB)",
    )
    image_gc_grace_s: float = Field(
        86400.0,
        ge=60,
        description="an uploaded image that no open lease (nor a lease intent this recent) names"
        " is removed once its last upload is this old (24 h)",
    )
    timeline_streams_per_client: int = Field(
        8,
        ge=1,
        description="open lease-timeline streams (SSE) per client IP; more are refused (429)",
    )
    timeline_streams_max: int = Field(
        1000,
        ge=1,
        description="open lease-timeline streams (SSE) per backend process; more are refused (503)",
    )
    timeline_stream_lifetime_s: float = Field(
        900.0,
        gt=0,
        description="a lease-timeline stream ends after this; browsers reconnect by themselves",
    )
    rate_limit_url: str | None = Field(
        None,
        description="Redis URL shared by replicas for rate-limit counters (default: the broker"
        " if it is Redis, else counters in this process)",
    )
    rate_limit_per_client: int = Field(
        600, description="requests per client IP per minute, all endpoints (0: no limit)"
    )
    rate_limit_writes_per_address: int = Field(
        300,
        description="requests to each writing endpoint per address (renter or node) per minute"
        " (0: no limit)",
    )
    siwe_max_live_nonces: int = Field(
        5, description="unanswered SIWE challenges an address may hold at once"
    )
    match_accept_timeout_s: int = Field(
        60, description="time a matched node has to accept on chain before the next is tried"
    )
    match_boot_max_s: int = Field(
        600,
        ge=0,
        description="a matched node that boots its guest before it accepts (the combined accept)"
        " may keep its reservation alive (`POST /v1/leases/{id}/reservation/keepalive`) for at"
        " most this long after the dispatch",
    )
    verifier_keystore: Path | None = Field(
        None, description="keystore of the verifier key that confirms attestations on chain"
    )
    verifier_password_file: Path | None = Field(
        None, description="file (owner-only) holding the verifier keystore password"
    )
    verifier_evidence_timeout_s: int = Field(
        600,
        ge=1,
        description="a pending attestation without evidence this long after its submission is"
        " reported as left unvoted (never rejected: the node holding the report would overturn"
        " that on chain); it lapses at the end of the registry's verification window",
    )
    verifier_challenge_stale_s: int = Field(
        120,
        ge=0,
        description="the verifier challenges the attested leases of a node whose last heartbeat"
        " is older than this (0: never)",
    )
    liveness_timeout_s: int = Field(
        60,
        ge=1,
        description="failover watch: a lease whose key policy allows failover and whose node sent"
        " no heartbeat for this long is challenged, and moved to another node (LeaseMarket."
        "failover) once its attestation expired or its first one was missed",
    )
    liveness_per_pass: int = Field(
        16,
        ge=1,
        le=1000,
        description="failover watch: leases it checks on chain per background round",
    )
    verifier_watch: bool = Field(
        True,
        description="the verifier re-checks the other verifiers' verdicts within their dispute"
        " window and disputes a wrong one on chain, posting the bond from its key",
    )
    verifier_watch_per_tick: int = Field(
        8,
        ge=1,
        le=1000,
        description="decided attestations the watcher re-checks per background round",
    )
    kds_url: str = Field(
        "https://kdsintf.amd.com",
        pattern=r"^https?://[^\s/?#]+(:[0-9]+)?(/[^\s?#]*)?$",
        description="AMD's Key Distribution Service: where the verifier fetches a chip's VCEK"
        " before it rejects a report for its certificates, and the watcher the VCEK a dispute"
        " carries (a local stand-in in tests)",
    )

    # --- key service and snapshots (issue 20; owned by backend/) -------------------------
    object_store_dir: Path = Field(
        default_factory=lambda data: data["data_dir"] / "objects",
        description="where the backend keeps leases' snapshot objects (ciphertext) when no"
        " S3-compatible store is set",
    )
    object_store_url: str | None = Field(
        None,
        description="S3-compatible endpoint for snapshot objects (e.g. https://s3.example:9000);"
        " its keys come from CVM_OBJECT_STORE_ACCESS_KEY and CVM_OBJECT_STORE_SECRET_KEY in the"
        " environment only (unset: the object directory)",
    )
    object_store_bucket: str = Field(
        "cvm-snapshots", description="bucket of the S3-compatible object store"
    )
    object_store_region: str = Field(
        "us-east-1", description="region the S3-compatible object store signs requests for"
    )
    snapshot_lease_quota_bytes: int = Field(
        2**30,
        ge=1,
        description="room one lease's snapshot chunks and manifests may take; an upload past it"
        " is refused (413) (1 GiB)",
    )
    snapshot_retention_s: float = Field(
        86400.0,
        ge=0,
        description="a closed lease's key deposits, releases, epoch records and snapshot objects"
        " are removed this long after the backend first sees it closed (24 h)",
    )

    # --- node agent ----------------------------------------------------------------
    node_keystore: Path | None = Field(
        None, description="keystore of the node key the agent accepts and attests with"
    )
    node_password_file: Path | None = Field(
        None, description="file (owner-only) holding the node keystore password"
    )
    node_measurements: str = Field(
        "",
        description="launch measurements (48-byte hex, comma-separated) this node can produce;"
        " leases expecting any other are refused (none set: every lease is refused)",
    )
    node_launcher: str = Field(
        "simulated", description="guest launcher: simulated, qemu (no SEV) or qemu-snp"
    )
    node_capacity_vcpus: int | None = Field(
        None, description="vCPUs the agent may lease out (default: as registered on chain)"
    )
    node_capacity_memory_mib: int | None = Field(
        None, description="memory the agent may lease out (default: as registered on chain)"
    )
    node_capacity_disk_gib: int | None = Field(
        None, description="disk the agent may lease out (default: as registered on chain)"
    )
    node_reconcile_interval_s: float = Field(
        30.0, description="seconds between reconciler passes (chain vs store vs guests)"
    )
    node_heartbeat_interval_s: float = Field(
        15.0, description="seconds between signed heartbeats to the backend"
    )
    snapshot_interval_s: float = Field(
        60.0,
        gt=0,
        description="seconds between snapshots of a lease's declared disk (node agents; a"
        " guest with its snapshot keys only), uploaded encrypted through the backend",
    )
    node_reattest_margin_s: int = Field(
        60, description="re-attest this many seconds before the attestation expires"
    )
    node_speculative_boot: bool = Field(
        True,
        description="boot a dispatched lease's guest while its accept is being mined (bound to the"
        " lease and renter at launch); it is asked for a report only once the accept is final,"
        " and stopped with its disk removed if the accept loses or is dropped",
    )
    node_accept_mode: Literal["combined", "separate"] = Field(
        "combined",
        description="how a node takes a lease: `combined` boots the guest while the lease is still"
        " open and sends one transaction that accepts it and submits the first attestation"
        " (three inclusions per lease: create, acceptAndSubmit, confirm); `separate` accepts, then"
        " submits (four). Combined needs speculative boot (without it the node accepts separately)",
    )
    node_accept_confirmations: int = Field(
        0,
        ge=0,
        le=64,
        description="blocks an accept must be buried under before the guest is asked for its first"
        " report (0: the accept's own block; the agent re-reads the lease at the head either way)",
    )
    node_task_visibility_timeout_s: int = Field(
        300, description="seconds before a task taken by a dead worker is delivered again"
    )
    node_task_max_retries: int = Field(
        8, description="retries (exponential backoff) of a failed lease task"
    )
    node_qemu_binary: str = Field("qemu-system-x86_64", description="QEMU for qemu launchers")
    node_qemu_accel: str = Field(
        "auto",
        description="QEMU accelerator of the qemu launcher: kvm, tcg, or auto (kvm when a probe"
        " guest boots under it, else tcg)",
    )
    node_image: str | None = Field(
        None, description="image id the qemu launchers boot for leases that name none"
    )
    node_guest_outbound: bool = Field(
        False,
        description="let qemu guests open connections out of the node (user networking"
        " without restrict=on). Off: a guest reaches nothing but its forwarded ports. On, QEMU's"
        " user networking cannot filter destinations: the guest also reaches the host's"
        " 127.0.0.1 (as 10.0.2.2) and its private networks; see the README",
    )
    node_public_host: str = Field(
        "127.0.0.1",
        description="IPv4 address of the node on which qemu guests' SSH and service ports are"
        " forwarded (free ports) and announced to their renters; 0.0.0.0 is refused (a renter"
        " must be told one address). Service ports carry TLS with the guest's attested key",
    )
    image_dir: Path = Field(
        default_factory=lambda data: data["data_dir"] / "images",
        description="guest images by content address, and the Debian packages they are built"
        " from; the backend serves the images in it",
    )
    node_image_dir: Path | None = Field(
        None,
        description="where the qemu launchers keep the images they boot, downloaded from the"
        " backend and checked against their id (default: the image directory)",
    )
    node_image_cache_bytes: int | None = Field(
        None,
        ge=1,
        description="at most this much of renters' images kept in the node's image directory:"
        " least recently used ones that no guest boots are removed after a download (unset:"
        " keep all; set it only where the directory is the node's own)",
    )
    image_ovmf: Path | None = Field(
        None,
        description="AmdSev OVMF that image measurements use and qemu-snp guests boot (default:"
        " the distribution's, else a reference build good for the simulated AMD-SP only)",
    )
    sim_amd_dir: Path = Field(
        default_factory=lambda data: data["data_dir"] / "sim-amd",
        description="directory of the simulated AMD roots shared by local agents and verifiers"
        " (tests and demos only)",
    )

    @field_validator("node_measurements", mode="after")
    @classmethod
    def _measurements(cls, text: str) -> str:
        # Checked when read, so a typo stops the agent at start instead of refusing leases.
        for item in (part.strip() for part in text.split(",")):
            if item and len(_hex_bytes(item)) != MEASUREMENT_BYTES:
                raise ValueError(f"{item!r} is not a {MEASUREMENT_BYTES}-byte hex measurement")
        return text

    @property
    def node_measurement_list(self) -> tuple[bytes, ...]:
        """`node_measurements` as bytes, in the order given, without duplicates."""
        items = (part.strip() for part in self.node_measurements.split(","))
        return tuple(dict.fromkeys(_hex_bytes(item) for item in items if item))

    @field_validator("node_public_host", mode="after")
    @classmethod
    def _public_host(cls, text: str) -> str:
        import ipaddress

        try:
            address = ipaddress.IPv4Address(text.strip())
        except ValueError as exc:
            raise ValueError(f"{text!r} is not an IPv4 address") from exc
        if address.is_unspecified:
            raise ValueError("0.0.0.0 names no one address to announce: give the node's own")
        return str(address)

    @field_validator(
        "data_dir",
        "deployment_file",
        "sim_amd_dir",
        "image_dir",
        "node_image_dir",
        "object_store_dir",
        mode="after",
    )
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # A relative path would name another file in another working directory.
        return None if path is None else path.expanduser().absolute()

    @property
    def node_images(self) -> Path:
        """The node agent's image store: `node_image_dir`, else `image_dir`."""
        return self.node_image_dir or self.image_dir

    @property
    def wallet_dir(self) -> Path:
        """Renter wallets (keystores): `<data_dir>/wallets`."""
        return self.data_dir / "wallets"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The settings file is named by CVM_SETTINGS_FILE when it is read, not when imported.
        env_file = os.environ.get(SETTINGS_FILE_ENV) or DEFAULT_SETTINGS_FILE
        settings_file = DotEnvSettingsSource(settings_cls, env_file=env_file)
        return init_settings, env_settings, settings_file, file_secret_settings


def _hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ValueError(f"{text!r} is not hex") from None


class SettingsError(ValueError):
    """A CVM_* setting (environment or settings file) is malformed: one line per bad setting.

    A usage error (`exit_code` 2), not a bug: the user fixes the named setting.
    """

    exit_code = 2


def _settings_problems(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        # A path default derived from another field fails only because that field is bad:
        # "default_factory_not_called" would name a setting the user never set.
        if error["type"] == "default_factory_not_called":
            continue
        name = str(error["loc"][0]) if error["loc"] else ""
        why = str(error["msg"]).removeprefix("Value error, ")
        setting = f"CVM_{name.upper()}" if name else "settings"
        lines.append(f"{setting}: {why} (got {error.get('input')!r})")
    return lines


def get_settings() -> Settings:
    """Read the settings afresh (cheap; callers that need a stable view keep the result).

    Raises `SettingsError` naming each bad CVM_* setting, never pydantic's ValidationError.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError("\n".join(_settings_problems(exc)) or str(exc)) from None
