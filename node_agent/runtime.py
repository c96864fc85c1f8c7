"""Build a node agent from the settings: node key, chain, launcher, store, capacity, backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient
from cvm.chain import ChainClient, Deployment, connect
from cvm.config import Settings
from cvm.wallet import PASSWORD_FD_ENV, load_account, read_password_fd, resolve_password
from node_agent.agent import NodeAgent
from node_agent.errors import AgentError
from node_agent.launcher.base import Launcher
from node_agent.store import AgentStore, Resources


def load_node_account(
    settings: Settings, prompt: Callable[[str], str] | None = None
) -> LocalAccount:
    """Unlock the node keystore with the password file, or by asking `prompt`."""
    if settings.node_keystore is None:
        raise AgentError("no node keystore: set CVM_NODE_KEYSTORE or pass --keystore")
    inherited = os.environ.pop(PASSWORD_FD_ENV, None)
    if inherited is not None and settings.node_password_file is None:
        return load_account(settings.node_keystore, read_password_fd(int(inherited)))
    if settings.node_password_file is None and prompt is None:
        raise AgentError("no password: set CVM_NODE_PASSWORD_FILE or run interactively")

    def no_prompt(_: str) -> str:
        raise AgentError("no password source")

    password = resolve_password(settings.node_password_file, prompt or no_prompt)
    return load_account(settings.node_keystore, password)


def state_dir(settings: Settings, node_address: str) -> Path:
    """Where one node's agent keeps its store, guests and locks."""
    return settings.data_dir / "node" / node_address.lower()


def sim_amd_dir(settings: Settings) -> Path:
    return settings.sim_amd_dir or settings.data_dir / "sim-amd"


def make_launcher(settings: Settings, directory: Path) -> Launcher:
    """The launcher named by `node_launcher`; qemu-snp refuses hosts without SEV-SNP."""
    kind = settings.node_launcher
    if kind == "simulated":
        from node_agent.launcher.signer import SimulatedAmdSp
        from node_agent.launcher.simulated import SimulatedLauncher

        return SimulatedLauncher(directory / "guests", SimulatedAmdSp(sim_amd_dir(settings)))
    if kind == "qemu":
        from cvm.images import ImageStore
        from node_agent.launcher.qemu import QemuLauncher
        from node_agent.launcher.signer import SimulatedAmdSp

        return QemuLauncher(
            directory / "qemu",
            SimulatedAmdSp(sim_amd_dir(settings)),
            qemu_binary=settings.node_qemu_binary,
            accel=settings.node_qemu_accel,
            images=ImageStore(settings.node_images),
            default_image=settings.node_image,
            ovmf=settings.image_ovmf,
            guest_outbound=settings.node_guest_outbound,
            public_host=settings.node_public_host,
            volume_dir=directory / "volumes",
        )
    if kind == "qemu-snp":
        from cvm.images import ImageStore
        from node_agent.launcher.qemu_snp import QemuSnpLauncher, SnpConfig, snp_ovmf

        # The OVMF the guests boot is the one their expected measurements are computed with.
        return QemuSnpLauncher(
            directory / "qemu",
            SnpConfig(ovmf=snp_ovmf(settings.image_ovmf)),
            images=ImageStore(settings.node_images),
            default_image=settings.node_image,
            qemu_binary=settings.node_qemu_binary,
            guest_outbound=settings.node_guest_outbound,
            public_host=settings.node_public_host,
            volume_dir=directory / "volumes",
        )
    raise AgentError(f"unknown launcher {kind!r}: use simulated, qemu or qemu-snp")


def node_capacity(settings: Settings, chain: ChainClient, node_address: str) -> Resources:
    """What the agent may lease out: the settings, else what the node registered on chain."""
    node = chain.nodes.get_node(node_address)
    if not node.registered and None in (
        settings.node_capacity_vcpus,
        settings.node_capacity_memory_mib,
        settings.node_capacity_disk_gib,
    ):
        raise AgentError(f"node {node_address} is not registered: `cvm node register` first")
    return Resources(
        vcpu=settings.node_capacity_vcpus or node.vcpu,
        memory_mib=settings.node_capacity_memory_mib or node.memory_mib,
        disk_gib=settings.node_capacity_disk_gib or node.disk_gib,
    )


def build_agent(settings: Settings, account: LocalAccount) -> NodeAgent:
    """A ready agent for `account` (the node key) with everything the settings name."""
    deployment = Deployment.load(settings.deployment_file)
    chain = connect(deployment, account, settings=settings, check=False)
    directory = state_dir(settings, account.address)
    return NodeAgent(
        chain,
        make_launcher(settings, directory),
        AgentStore(directory / "agent.sqlite"),
        node_capacity(settings, chain, account.address),
        directory / "locks",
        api=ApiClient(settings.api_url),
        reattest_margin_s=settings.node_reattest_margin_s,
        measurements=settings.node_measurement_list,
        image_max_bytes=settings.image_max_bytes,
        image_cache_bytes=settings.node_image_cache_bytes,
        snapshot_interval_s=settings.snapshot_interval_s,
        speculative_boot=settings.node_speculative_boot,
        accept_confirmations=settings.node_accept_confirmations,
        accept_mode=settings.node_accept_mode,
    )
