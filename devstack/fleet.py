"""The simulated node fleet: profiles (capacity, price) and putting a node on chain.

Profiles differ on purpose, so the matcher has real choices to make: a small cheap node,
a mid-sized one, a large expensive one, repeating with slight variations for bigger fleets.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    for index in range(count):
        vcpu, memory, disk, price = _SHAPES[index % len(_SHAPES)]
        round_ = index // len(_SHAPES)
        # Later rounds are a little cheaper, so no two nodes tie on price.
        profiles.append(
            NodeProfile(vcpu, memory, disk, price - round_ * 10_000_000_000, region=index % 4)
        )
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
