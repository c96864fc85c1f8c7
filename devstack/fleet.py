"""The simulated node fleet: profiles (capacity, price) and putting a node on chain.

Profiles differ on purpose, so the matcher has real choices to make: a small cheap node,
a mid-sized one, a large expensive one, repeating with slight variations for bigger fleets.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount

from cvm.chain import ChainClient, NodeSpec, TeeType, sign_node_consent

# (vCPU, memory MiB, disk GiB, price per vCPU-second in token base units)
_SHAPES = (
    (4, 8_192, 100, 1_000_000_000_000),
    (8, 16_384, 200, 2_000_000_000_000),
    (16, 65_536, 500, 3_000_000_000_000),
)


@dataclass(frozen=True)
class NodeProfile:
    """What one simulated node offers."""

    vcpu: int
    memory_mib: int
    disk_gib: int
    price_per_vcpu_second: int
    region: int = 0

    def spec(self) -> NodeSpec:
        return NodeSpec(
            TeeType.SEV_SNP,
            self.vcpu,
            self.memory_mib,
            self.disk_gib,
            self.region,
            self.price_per_vcpu_second,
        )


def default_profiles(count: int) -> list[NodeProfile]:
    """`count` profiles cycling through small, medium and large, prices nudged per round."""
    profiles = []
    # Later rounds are a little cheaper, so no two nodes tie on price; in big fleets by
    # smaller steps, so that the cheapest shape stays above zero.
    rounds = count // len(_SHAPES) + 1
    step = min(10_000_000_000, _SHAPES[0][3] // (rounds + 1))
    for index in range(count):
        vcpu, memory, disk, price = _SHAPES[index % len(_SHAPES)]
        round_ = index // len(_SHAPES)
        profiles.append(NodeProfile(vcpu, memory, disk, price - round_ * step, region=index % 4))
    return profiles


def provision_node(
    admin: ChainClient,
    operator: ChainClient,
    node_account: LocalAccount,
    profile: NodeProfile,
    stake: int,
    gas_wei: int,
) -> None:
    """Fund an operator and its node key, register the node and stake for it.

    `admin` is the deployer of a local deployment (it owns the test token and holds ether).
    """
    assert operator.address is not None
    node_address = node_account.address
    admin.token.mint(operator.address, stake)
    for address in (operator.address, node_address):
        _send_ether(admin, address, gas_wei)
    consent = sign_node_consent(node_account, operator.address, operator.deployment)
    operator.nodes.register(node_address, profile.spec(), node_key_signature=consent)
    operator.token.approve(admin.deployment.node_registry, stake)
    operator.nodes.stake(node_address, stake)


def _send_ether(admin: ChainClient, to: str, wei: int) -> None:
    assert admin.sender is not None
    admin.sender.send({"to": to, "value": wei})


# Transactions in flight at once while provisioning a fleet: the sender hands each its own
# nonce (cvm.chain.sender), so they overlap their round trips instead of queueing on them.
PROVISION_THREADS = 16
# Nodes registered per fleet at most (a bench's 1,000 and some room).
MAX_FLEET_NODES = 5_000


def provision_fleet(
    admin: ChainClient,
    node_accounts: Sequence[LocalAccount],
    profiles: Sequence[NodeProfile],
    stake: int,
    gas_wei: int,
    *,
    threads: int = PROVISION_THREADS,
) -> LocalAccount:
    """Register and stake many nodes under one new operator; returns the operator.

    Batched for a thousand nodes on anvil: one mint and one allowance for all stakes, then
    the ether for each node key and each node's register and stake sent from `threads`
    threads at once, each transaction with its own nonce from the one funded sender of
    its account (there is no multicall in the contracts to fold them further).
    """
    if not 1 <= len(node_accounts) <= MAX_FLEET_NODES:
        raise ValueError(f"give 1 to {MAX_FLEET_NODES} node keys, not {len(node_accounts)}")
    if len(profiles) != len(node_accounts):
        raise ValueError("one profile per node key")
    operator_account: LocalAccount = Account.create()
    operator = admin.with_account(operator_account)
    assert operator.address is not None
    admin.token.mint(operator.address, stake * len(node_accounts))
    # The operator sends two transactions per node: ten nodes' worth of gas covers them.
    _send_ether(admin, operator.address, gas_wei * 10)
    operator.token.approve(admin.deployment.node_registry, stake * len(node_accounts))

    def put_on_chain(index: int) -> None:
        node_account = node_accounts[index]
        _send_ether(admin, node_account.address, gas_wei)
        consent = sign_node_consent(node_account, operator_account.address, operator.deployment)
        operator.nodes.register(
            node_account.address, profiles[index].spec(), node_key_signature=consent
        )
        operator.nodes.stake(node_account.address, stake)

    with ThreadPoolExecutor(max(1, min(threads, 64))) as pool:
        list(pool.map(put_on_chain, range(len(node_accounts))))
    return operator_account
