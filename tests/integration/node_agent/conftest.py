"""Fixtures of the node-agent integration tests: an agent of the chain fixture's node key."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from cvm.chain import ChainClient
from node_agent.agent import NodeAgent
from node_agent.launcher.signer import SimulatedAmdSp
from node_agent.launcher.simulated import SimulatedLauncher
from node_agent.store import AgentStore, Resources
from tests.fixtures.chain import MEASUREMENT, ChainSystem

NODE_CAPACITY = Resources(vcpu=16, memory_mib=65_536, disk_gib=500)


@pytest.fixture(scope="session")
def amd_sp() -> SimulatedAmdSp:
    """One simulated chip for the session (its RSA keys take seconds to make)."""
    return SimulatedAmdSp()


@pytest.fixture
def make_agent(
    chain: ChainSystem, tmp_path: Path, amd_sp: SimulatedAmdSp
) -> Callable[..., NodeAgent]:
    """Build an agent of `chain.accounts.node_key` over a fresh store and simulated launcher."""

    def build(
        capacity: Resources = NODE_CAPACITY,
        state: Path | None = None,
        *,
        measurements: Collection[bytes] = (MEASUREMENT,),
        client: ChainClient | None = None,
        accept_mode: str = "combined",
    ) -> NodeAgent:
        state = state or tmp_path / "agent"
        return NodeAgent(
            client or chain.node,
            SimulatedLauncher(state / "guests", amd_sp),
            AgentStore(state / "agent.sqlite"),
            capacity,
            state / "locks",
            measurements=measurements,
            accept_mode=accept_mode,
        )

    return build
