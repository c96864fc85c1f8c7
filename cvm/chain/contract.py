"""The base of the typed contract clients: views through `call`, writes through a sender.

A client without an account can read; writing needs a `TransactionSender`. Every write
returns a `TxResult` with the gas it used and the events it emitted, already decoded.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3Exception
from web3.types import TxReceipt

from cvm.chain.artifacts import load_artifact, revert_decoder
from cvm.chain.errors import ChainError
from cvm.chain.events import ChainEvent, EventDecoder
from cvm.chain.sender import TransactionSender, revert_error

# web3 builds a class per ABI and objects per function on every `eth.contract` call (ms
# each); a contract object holds no account, so one per connection and address serves all.
_contracts: weakref.WeakKeyDictionary[Web3, dict[tuple[str, str], Contract]] = (
    weakref.WeakKeyDictionary()
)
_contracts_lock = threading.Lock()


def _bound_contract(w3: Web3, name: str, address: str) -> Contract:
    with _contracts_lock:
        per_connection = _contracts.setdefault(w3, {})
        contract = per_connection.get((name, address))
        if contract is None:
            contract = w3.eth.contract(address=address, abi=load_artifact(name).abi)  # type: ignore[call-overload]
            per_connection[(name, address)] = contract
        return contract


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction and the cvm events it emitted (in log order)."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: list[ChainEvent]

    @classmethod
    def from_receipt(cls, receipt: TxReceipt, decoder: EventDecoder) -> TxResult:
        """Decode the receipt's logs with `decoder`."""
        return cls(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=decoder.from_receipt(receipt),
        )

    def event(self, name: str) -> ChainEvent:
        """The first event called `name`; ChainError if the transaction emitted none."""
        for event in self.events:
            if event.name == name:
                return event
        raise ChainError(f"transaction {self.tx_hash} emitted no {name}")

    def all(self, name: str) -> list[ChainEvent]:
        """Every event called `name`, in log order."""
        return [event for event in self.events if event.name == name]


class ContractClient:
    """Typed access to one deployed contract (subclasses name the contract and its calls)."""

    contract_name: str = ""

    def __init__(
        self,
        w3: Web3,
        address: str,
        events: EventDecoder,
        sender: TransactionSender | None = None,
    ) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.contract = _bound_contract(w3, self.contract_name, self.address)
        self._events = events
        self._sender = sender

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address})"

    @property
    def sender(self) -> TransactionSender:
        """The sender of this client's transactions; ChainError for a read-only client."""
        if self._sender is None:
            raise ChainError(f"{type(self).__name__} has no account: it can only read")
        return self._sender

    def _call(self, function: str, *args: Any) -> Any:
        """Call view `function`; a revert comes back as the named error."""
        bound = self.contract.functions[function](*args)
        try:
            sender = self._sender.address if self._sender is not None else None
            return bound.call({"from": sender} if sender else {})
        except ContractLogicError as exc:
            raise revert_error(exc, revert_decoder()) from None
        except Web3Exception as exc:
            raise ChainError(f"{self.contract_name}.{function} failed: {exc}") from exc

    def _call_at(self, block: int, function: str, *args: Any) -> Any:
        """Call view `function` as of block `block` (its state after that block)."""
        bound = self.contract.functions[function](*args)
        try:
            return bound.call(block_identifier=block)
        except ContractLogicError as exc:
            raise revert_error(exc, revert_decoder()) from None
        except Web3Exception as exc:
            raise ChainError(f"{self.contract_name}.{function} failed: {exc}") from exc

    def _send(self, function: str, *args: Any, gas: int | None = None) -> TxResult:
        """Send `function(*args)` as a transaction from this client's account."""
        receipt = self.sender.transact(self.contract.functions[function](*args), gas=gas)
        return TxResult.from_receipt(receipt, self._events)


class OwnedContractClient(ContractClient):
    """A contract with OpenZeppelin `Ownable2Step`: ownership moves only when accepted."""

    def owner(self) -> str:
        """The current owner."""
        return str(self._call("owner"))

    def pending_owner(self) -> str:
        """The proposed owner who has not accepted yet (zero if none)."""
        return str(self._call("pendingOwner"))

    def transfer_ownership(self, new_owner: str) -> TxResult:
        """Propose `new_owner` (owner only); it takes effect on `accept_ownership`."""
        return self._send("transferOwnership", new_owner)

    def accept_ownership(self) -> TxResult:
        """Accept a proposed ownership (the pending owner)."""
        return self._send("acceptOwnership")
