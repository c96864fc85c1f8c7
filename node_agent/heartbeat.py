"""The node's heartbeat: its free capacity, signed by the node key, sent to the backend."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient
from cvm.chain import Deployment
from cvm.eip712 import Domain, Heartbeat, sign_heartbeat
from node_agent.store import AgentStore, Resources


def send_heartbeat(
    api: ApiClient,
    deployment: Deployment,
    account: LocalAccount,
    store: AgentStore,
    capacity: Resources,
    timestamp: int,
) -> Heartbeat:
    """Sign what is free of `capacity` now (never below zero) and send it; the beat sent."""
    free = capacity.minus(store.used())
    beat = Heartbeat(
        node=str(account.address),
        free_vcpus=max(free.vcpu, 0),
        free_memory_mib=max(free.memory_mib, 0),
        free_disk_gib=max(free.disk_gib, 0),
        running_leases=len(store.leases()),
        timestamp=timestamp,
    )
    domain = Domain(deployment.chain_id, deployment.node_registry)
    api.send_heartbeat(sign_heartbeat(beat, domain, account.key))
    return beat
