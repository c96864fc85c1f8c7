"""Client of `NodeRegistry`: nodes, their operators and their stake."""

from __future__ import annotations

from cvm.chain.contract import OwnedContractClient, TxResult
from cvm.chain.types import Node, NodeSpec


class NodeRegistryClient(OwnedContractClient):
    """Typed calls of `INodeRegistry` (see its NatSpec for the rules)."""

    contract_name = "NodeRegistry"

    # --- views -------------------------------------------------------------------
    def get_node(self, node_key: str) -> Node:
        """The stored record of `node_key` (`registered` is False if unknown)."""
        return Node.from_tuple(node_key, tuple(self._call("getNode", node_key)))

    def operator_of(self, node_key: str) -> str:
        """The operator of `node_key` (the zero address if unregistered)."""
        return str(self._call("operatorOf", node_key))

    def node_consent_typehash(self) -> bytes:
        """The EIP-712 type hash of `NodeConsent(address nodeKey,address operator)`."""
        return bytes(self._call("NODE_CONSENT_TYPEHASH"))

    def node_consent_digest(self, node_key: str, operator: str) -> bytes:
        """The EIP-712 digest `node_key` signs to consent to `operator` registering it."""
        return bytes(self._call("nodeConsentDigest", node_key, operator))

    def burned_stake(self) -> int:
        """Slashed stake beyond renters' compensation, locked in the registry for good."""
        return int(self._call("burnedStake"))

    def node_terms(self, node_key: str) -> tuple[Node, int, int]:
        """The node with the registry's `minStake` and `slashBps` (what accept reads)."""
        node, min_stake, slash_bps = self._call("nodeTerms", node_key)
        return Node.from_tuple(node_key, tuple(node)), int(min_stake), int(slash_bps)

    def token(self) -> str:
        """Address of the staked ERC-20."""
        return str(self._call("token"))

    def lease_market(self) -> str:
        """The lease market allowed to slash."""
        return str(self._call("leaseMarket"))

    def min_stake(self) -> int:
        """Active stake every node needs to accept any lease."""
        return int(self._call("minStake"))

    def unbonding_delay(self) -> int:
        """Seconds between `request_unstake` and `withdraw_unstaked`."""
        return int(self._call("unbondingDelay"))

    def slash_bps(self) -> int:
        """Basis points of a lease's required stake that it bonds at accept (what a slash takes)."""
        return int(self._call("slashBps"))

    def max_slash_bps(self) -> int:
        """Hard cap on `slash_bps`."""
        return int(self._call("MAX_SLASH_BPS"))

    def max_unbonding_delay(self) -> int:
        """Hard cap on the unbonding delay, in seconds."""
        return int(self._call("MAX_UNBONDING_DELAY"))

    # --- operator ----------------------------------------------------------------
    def register(
        self, node_key: str, spec: NodeSpec, endpoint: str = "", *, node_key_signature: bytes
    ) -> TxResult:
        """Register `node_key` with this client's account as operator.

        `node_key_signature` is the node key's consent to this operator, made with
        `cvm.chain.sign_node_consent`; a wrong one reverts with
        `NodeRegistry_InvalidNodeKeySignature`.
        """
        return self._send("register", node_key, spec.as_tuple(), endpoint, node_key_signature)

    def update(self, node_key: str, spec: NodeSpec, endpoint: str = "") -> TxResult:
        """Change a node's capabilities, price and endpoint."""
        return self._send("update", node_key, spec.as_tuple(), endpoint)

    def stake(self, node_key: str, amount: int) -> TxResult:
        """Stake `amount` (needs a token allowance to the registry)."""
        return self._send("stake", node_key, amount)

    def request_unstake(self, node_key: str, amount: int) -> TxResult:
        """Move `amount` of active stake into unbonding."""
        return self._send("requestUnstake", node_key, amount)

    def withdraw_unstaked(self, node_key: str) -> TxResult:
        """Take back all stake whose unbonding delay has passed."""
        return self._send("withdrawUnstaked", node_key)

    # --- lease market only (anyone else gets NodeRegistry_CallerNotLeaseMarket) ----------
    def slash(self, node_key: str, amount: int, compensation: int) -> TxResult:
        """Take up to `amount` of `node_key`'s stake, paying `compensation` of it to the market
        and burning the rest; only the lease market may."""
        return self._send("slash", node_key, amount, compensation)

    def restore_slash(self, node_key: str, amount: int) -> TxResult:
        """Give back a burned slash to `node_key` (an overturned rejection); lease market only."""
        return self._send("restoreSlash", node_key, amount)

    def record_missed_attestation(self, node_key: str) -> TxResult:
        """Count a missed re-attestation; only the lease market may."""
        return self._send("recordMissedAttestation", node_key)

    # --- owner -------------------------------------------------------------------
    def set_min_stake(self, amount: int) -> TxResult:
        """Set the minimum active stake (owner only)."""
        return self._send("setMinStake", amount)

    def set_unbonding_delay(self, seconds: int) -> TxResult:
        """Set the unbonding delay (owner only)."""
        return self._send("setUnbondingDelay", seconds)

    def set_slash_bps(self, bps: int) -> TxResult:
        """Set the slashed fraction (owner only)."""
        return self._send("setSlashBps", bps)

    def set_lease_market(self, market: str) -> TxResult:
        """Wire in the lease market, once (owner only)."""
        return self._send("setLeaseMarket", market)
