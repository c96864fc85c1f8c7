"""Decoding contract events from logs: from a receipt or from a block range (the indexer).

Each event comes back as a `ChainEvent` with its contract, name, decoded arguments and
position (block, transaction, log index), so consumers can order, deduplicate and roll
back on reorgs by position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import event_abi_to_log_topic, to_checksum_address
from eth_utils.abi import collapse_if_tuple
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3Exception
from web3.types import FilterParams, LogReceipt, TxReceipt

from cvm.chain.errors import ChainError


@dataclass(frozen=True)
class ChainEvent:
    """One decoded event log."""

    contract: str
    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    block_hash: str
    transaction_hash: str
    log_index: int

    @property
    def position(self) -> tuple[int, int]:
        """(block number, log index): the event's place in the chain's order."""
        return (self.block_number, self.log_index)


@dataclass(frozen=True)
class _EventAbi:
    contract: str
    name: str
    inputs: tuple[Mapping[str, Any], ...]


class EventDecoder:
    """Decodes logs emitted by known contracts (name → address and ABI)."""

    def __init__(self, contracts: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]) -> None:
        self._by_address: dict[str, dict[bytes, _EventAbi]] = {}
        self._names: dict[str, str] = {}
        for contract, (address, abi) in contracts.items():
            topics: dict[bytes, _EventAbi] = {}
            for entry in abi:
                if entry.get("type") == "event" and not entry.get("anonymous", False):
                    topic = event_abi_to_log_topic(dict(entry))  # type: ignore[arg-type]
                    topics[topic] = _EventAbi(contract, entry["name"], tuple(entry["inputs"]))
            self._by_address[address.lower()] = topics
            self._names[address.lower()] = contract

    @property
    def addresses(self) -> list[str]:
        """Checksummed addresses of every known contract."""
        return [to_checksum_address(address) for address in self._by_address]

    def decode(self, log: LogReceipt | Mapping[str, Any]) -> ChainEvent | None:
        """The event of `log`, or None when no known contract/event emitted it."""
        events = self._by_address.get(str(log["address"]).lower())
        topics = [HexBytes(topic) for topic in log["topics"]]
        if events is None or not topics:
            return None
        event = events.get(bytes(topics[0]))
        if event is None:
            return None
        indexed = [item for item in event.inputs if item.get("indexed")]
        plain = [item for item in event.inputs if not item.get("indexed")]
        args: dict[str, Any] = {}
        for item, topic in zip(indexed, topics[1:], strict=True):
            kind = collapse_if_tuple(dict(item))
            # Indexed dynamic values are stored as their keccak hash only.
            dynamic = kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")
            value = bytes(topic) if dynamic else abi_decode([kind], bytes(topic))[0]
            args[item["name"]] = value
        values = abi_decode(
            [collapse_if_tuple(dict(item)) for item in plain], HexBytes(log["data"])
        )
        for item, value in zip(plain, values, strict=True):
            args[item["name"]] = value
        ordered = {item["name"]: _named(args[item["name"]], item) for item in event.inputs}
        return ChainEvent(
            contract=event.contract,
            name=event.name,
            args=ordered,
            address=to_checksum_address(log["address"]),
            block_number=int(log["blockNumber"]),
            block_hash=HexBytes(log["blockHash"]).to_0x_hex(),
            transaction_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
            log_index=int(log["logIndex"]),
        )

    def decode_all(self, logs: Iterable[LogReceipt | Mapping[str, Any]]) -> list[ChainEvent]:
        """Every known event among `logs`, in chain order."""
        events = [event for log in logs if (event := self.decode(log)) is not None]
        return sorted(events, key=lambda event: event.position)

    def from_receipt(self, receipt: TxReceipt) -> list[ChainEvent]:
        """The known events a transaction emitted."""
        return self.decode_all(receipt["logs"])

    def fetch(self, w3: Web3, from_block: int, to_block: int | str = "latest") -> list[ChainEvent]:
        """Every known event in blocks `from_block`..`to_block` (inclusive), in chain order.

        `to_block="latest"` means the current head; a range that starts beyond it is empty
        (nodes disagree on whether that is an error, an indexer polling ahead needs neither).
        """
        try:
            last = int(w3.eth.block_number) if to_block == "latest" else int(to_block)
            if from_block > last:
                return []
            params: FilterParams = {
                "fromBlock": from_block,
                "toBlock": last,
                "address": self.addresses,  # type: ignore[typeddict-item]
            }
            logs = w3.eth.get_logs(params)
        except Web3Exception as exc:
            raise ChainError(f"eth_getLogs {from_block}..{to_block} failed: {exc}") from exc
        return self.decode_all(logs)


def _named(value: Any, item: Mapping[str, Any]) -> Any:
    """`value` with addresses checksummed and structs as dicts keyed by their field names."""
    kind = item.get("type")
    if kind == "address" and isinstance(value, str):
        return to_checksum_address(value)
    if kind == "tuple" and isinstance(value, tuple):
        components = item["components"]
        return {
            part["name"]: _named(field, part) for part, field in zip(components, value, strict=True)
        }
    return value
