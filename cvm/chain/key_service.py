"""Client of `KeyService`: key holders (X25519 key + stake) and per-lease key-release policies.

The renter sets a lease's policy (`set_key_policy`: allowed measurements, failover, threshold,
holders, key version, manifest hash); holders register with their X25519 public key and a stake,
and release their share of a lease's root key only while `is_releasable` holds (plus their own
check of the evidence). See `IKeyService` for the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from cvm.chain.contract import ContractClient, TxResult

MEASUREMENT_BYTES = 48
MAX_MEASUREMENTS = 8
MAX_POLICY_HOLDERS = 16


@dataclass(frozen=True, slots=True)
class HolderInfo:
    """A key holder as `KeyService.holderOf` returns it (all zero: unknown account)."""

    key: bytes
    stake: int
    unbonding: int
    unlocks_at: int
    registered: bool


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """A lease's key-release policy (`IKeyService.KeyPolicy`).

    `holders[i]` holds share index i+1; `manifest_hash` is the EIP-712 digest of the renter-signed
    key manifest; `key_version` must rise with every new root key."""

    measurements: tuple[bytes, ...]
    failover: bool
    threshold: int
    holders: tuple[str, ...]
    key_version: int
    manifest_hash: bytes

    def __post_init__(self) -> None:
        if not 1 <= len(self.measurements) <= MAX_MEASUREMENTS:
            raise ValueError(f"a key policy allows 1 to {MAX_MEASUREMENTS} measurements")
        for measurement in self.measurements:
            if len(measurement) != MEASUREMENT_BYTES:
                raise ValueError(f"a measurement is {MEASUREMENT_BYTES} bytes")
        if not 1 <= len(self.holders) <= MAX_POLICY_HOLDERS:
            raise ValueError(f"a key policy names 1 to {MAX_POLICY_HOLDERS} holders")
        if not 1 <= self.threshold <= len(self.holders):
            raise ValueError("the threshold must be between 1 and the number of holders")
        if not 0 <= self.key_version < 2**32:
            raise ValueError("key_version is a 32-bit unsigned integer")
        if len(self.manifest_hash) != 32:
            raise ValueError("manifest_hash is 32 bytes")

    def as_tuple(self) -> tuple[Any, ...]:
        """The calldata shape of the struct."""
        return (
            [bytes(m) for m in self.measurements],
            self.failover,
            self.threshold,
            [to_checksum_address(h) for h in self.holders],
            self.key_version,
            bytes(self.manifest_hash),
        )


class KeyServiceClient(ContractClient):
    """Typed calls of `IKeyService` (see its NatSpec for the rules)."""

    contract_name = "KeyService"

    # --- views -----------------------------------------------------------------------
    def holder_of(self, holder: str) -> HolderInfo:
        """A holder's X25519 key, stake, unbonding stake and registration."""
        key, stake, unbonding, unlocks_at, registered = self._call(
            "holderOf", to_checksum_address(holder)
        )
        return HolderInfo(bytes(key), int(stake), int(unbonding), int(unlocks_at), bool(registered))

    def active_holders(self) -> list[str]:
        """Every registered holder with at least the minimum stake active."""
        return [str(address) for address in self._call("activeHolders")]

    def is_active_holder(self, holder: str) -> bool:
        """Whether `holder` may be named in a key policy now."""
        return bool(self._call("isActiveHolder", to_checksum_address(holder)))

    def min_holder_stake(self) -> int:
        """Active stake a holder needs (to register and to be named in a policy)."""
        return int(self._call("minHolderStake"))

    def unbonding_delay(self) -> int:
        """Seconds unstaked holder stake waits before it can be withdrawn."""
        return int(self._call("unbondingDelay"))

    def stake_token(self) -> str:
        """The token holders stake."""
        return str(self._call("stakeToken"))

    def lease_market(self) -> str:
        """The lease market whose renters set policies."""
        return str(self._call("leaseMarket"))

    def attestation_registry(self) -> str:
        """The attestation registry `is_releasable` reads."""
        return str(self._call("attestationRegistry"))

    def limits(self) -> dict[str, int]:
        """The bounds: measurement length, measurements and holders per policy, holders."""
        return {
            "measurement_length": int(self._call("MEASUREMENT_LENGTH")),
            "max_measurements": int(self._call("MAX_MEASUREMENTS")),
            "max_policy_holders": int(self._call("MAX_POLICY_HOLDERS")),
            "max_holders": int(self._call("MAX_HOLDERS")),
        }

    def key_policy_of(self, lease_id: int) -> KeyPolicy | None:
        """The lease's key policy, or None if it has none."""
        measurements, failover, threshold, holders, key_version, manifest_hash = self._call(
            "keyPolicyOf", lease_id
        )
        if bytes(manifest_hash) == bytes(32):
            return None
        return KeyPolicy(
            measurements=tuple(bytes(m) for m in measurements),
            failover=bool(failover),
            threshold=int(threshold),
            holders=tuple(str(h) for h in holders),
            key_version=int(key_version),
            manifest_hash=bytes(manifest_hash),
        )

    def has_key_policy(self, lease_id: int) -> bool:
        """Whether the lease has a key policy."""
        return bool(self._call("hasKeyPolicy", lease_id))

    def failover_allowed(self, lease_id: int) -> bool:
        """Whether the lease's policy allows failover."""
        return bool(self._call("failoverAllowed", lease_id))

    def is_releasable(self, lease_id: int, measurement: bytes) -> bool:
        """Whether a holder may release its share to the lease's guest with `measurement` now
        (policy allows it, lease active, latest attestation Verified with that measurement)."""
        return bool(self._call("isReleasable", lease_id, bytes(measurement)))

    # --- holders ---------------------------------------------------------------------
    def register_holder(self, x25519_key: bytes) -> TxResult:
        """Register this account as a key holder (stake at least the minimum first)."""
        if len(x25519_key) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        return self._send("registerHolder", bytes(x25519_key))

    def deregister_holder(self) -> TxResult:
        """Leave the holder set (no stake active or unbonding)."""
        return self._send("deregisterHolder")

    def stake_holder(self, amount: int) -> TxResult:
        """Add `amount` to this account's holder stake (approve the key service first)."""
        return self._send("stakeHolder", amount)

    def request_unstake_holder(self, amount: int) -> TxResult:
        """Start unbonding `amount` of this account's holder stake."""
        return self._send("requestUnstakeHolder", amount)

    def withdraw_holder_stake(self) -> TxResult:
        """Withdraw the unbonded holder stake once unlocked."""
        return self._send("withdrawHolderStake")

    # --- renters ---------------------------------------------------------------------
    def set_key_policy(self, lease_id: int, policy: KeyPolicy) -> TxResult:
        """Set the lease's whole key policy (its renter only)."""
        return self._send("setKeyPolicy", lease_id, policy.as_tuple())

    def update_measurements(self, lease_id: int, measurements: Sequence[bytes]) -> TxResult:
        """Replace the lease's allowed measurements (its renter only)."""
        return self._send("updateMeasurements", lease_id, [bytes(m) for m in measurements])

    def set_failover(self, lease_id: int, failover: bool) -> TxResult:
        """Allow or forbid the lease's failover (its renter only)."""
        return self._send("setFailover", lease_id, failover)
