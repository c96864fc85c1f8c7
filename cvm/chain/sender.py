"""Signing and sending transactions with nonces that survive concurrent senders.

Every account has one process-wide nonce record per RPC endpoint, guarded by a lock
held only while a nonce is taken, the transaction signed and handed to the node; the
wait for the receipt happens outside it, so threads sending from one account pipeline
instead of colliding. A nonce error from the node (another process used the account,
or the chain was reverted) drops the record and the send is retried with a fresh
nonce. Keys stay in the `LocalAccount`: nothing here logs or prints them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import TxParams, TxReceipt

from cvm.chain.errors import ChainError, RevertDecoder

# Messages by which geth, anvil and others say the nonce we used is no longer right.
_NONCE_ERRORS = ("nonce", "already known", "underpriced")
_SEND_ATTEMPTS = 5


@dataclass
class _NonceRecord:
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_nonce: int | None = None


_records: dict[tuple[str, str], _NonceRecord] = {}
_records_lock = threading.Lock()


def _endpoint(w3: Web3) -> str:
    uri = getattr(w3.provider, "endpoint_uri", None)
    return str(uri) if uri else f"provider-{id(w3.provider)}"


def _record(w3: Web3, address: str) -> _NonceRecord:
    key = (_endpoint(w3), address.lower())
    with _records_lock:
        return _records.setdefault(key, _NonceRecord())


def forget_nonces(endpoint: str | None = None) -> None:
    """Drop cached nonces (of one endpoint, or all): after a chain revert or restart."""
    with _records_lock:
        for key in list(_records):
            if endpoint is None or key[0] == endpoint:
                _records[key].next_nonce = None


def revert_error(exc: ContractLogicError, decoder: RevertDecoder) -> ChainError:
    """The named chain error for web3's revert exception (custom errors decoded)."""
    data = exc.data if isinstance(exc.data, str) else None
    return decoder.decode(data, exc.message or "")


class TransactionSender:
    """Sends transactions from one local account: estimate gas, sign, send, await receipt.

    Reverts surface as `ContractRevert` (decoded with `decoder`), whether found while
    estimating gas or after mining; other failures as `ChainError`.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        decoder: RevertDecoder,
        *,
        gas_margin: float = 1.25,
        receipt_timeout: float = 120.0,
        poll_latency: float = 0.02,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.decoder = decoder
        self.gas_margin = gas_margin
        self.receipt_timeout = receipt_timeout
        self.poll_latency = poll_latency
        self._chain_id: int | None = None

    def __repr__(self) -> str:  # never show the key
        return f"TransactionSender({self.account.address})"

    @property
    def address(self) -> str:
        """The checksummed sending address."""
        return str(self.account.address)

    @property
    def chain_id(self) -> int:
        """The chain id (asked once)."""
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def call(self, function: ContractFunction) -> Any:
        """Run a view function; reverts come back as named errors."""
        try:
            return function.call({"from": self.address})
        except ContractLogicError as exc:
            raise revert_error(exc, self.decoder) from None
        except Web3Exception as exc:
            raise ChainError(f"call failed: {exc}") from exc

    def transact(
        self, function: ContractFunction, *, value: int = 0, gas: int | None = None
    ) -> TxReceipt:
        """Send a contract call as a transaction and return its successful receipt."""
        data = HexBytes(function._encode_transaction_data())
        return self.send({"to": function.address, "data": data, "value": value}, gas=gas)

    def deploy(
        self, bytecode: str, constructor_data: bytes = b"", *, gas: int | None = None
    ) -> TxReceipt:
        """Deploy code (creation bytecode followed by encoded constructor arguments)."""
        return self.send({"data": HexBytes(bytecode) + constructor_data, "value": 0}, gas=gas)

    def send(self, params: dict[str, Any], *, gas: int | None = None) -> TxReceipt:
        """Fill in gas, fees, chain id and nonce, sign, send and wait for a good receipt.

        `params` holds `to` (absent to deploy), `data` and `value`.
        """
        tx = {**params, "from": self.address, "chainId": self.chain_id}
        try:
            if gas is None:
                gas = int(self.w3.eth.estimate_gas(cast(TxParams, tx)) * self.gas_margin)
            tx["gas"] = gas
            base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0))
            priority = int(self.w3.eth.max_priority_fee)
            tx["maxPriorityFeePerGas"] = priority
            tx["maxFeePerGas"] = 2 * base_fee + priority
            tx_hash = self._sign_and_send(tx)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=self.poll_latency
            )
        except ContractLogicError as exc:
            raise revert_error(exc, self.decoder) from None
        except TimeExhausted as exc:
            raise ChainError(f"no receipt within {self.receipt_timeout}s: {exc}") from exc
        except Web3Exception as exc:
            raise ChainError(f"transaction failed: {exc}") from exc
        if receipt["status"] != 1:
            raise self._explain_failure(tx, receipt)
        return receipt

    def _sign_and_send(self, tx: dict[str, Any]) -> HexBytes:
        record = _record(self.w3, self.address)
        for attempt in range(_SEND_ATTEMPTS):
            with record.lock:
                if record.next_nonce is None:
                    record.next_nonce = self.w3.eth.get_transaction_count(
                        self.account.address, "pending"
                    )
                nonce = record.next_nonce
                signed = self.account.sign_transaction({**tx, "nonce": nonce})
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Web3Exception as exc:
                    if attempt + 1 < _SEND_ATTEMPTS and _is_nonce_error(exc):
                        record.next_nonce = None  # resync from the node on the next try
                        continue
                    raise
                record.next_nonce = nonce + 1
                return tx_hash
        raise ChainError("could not find a usable nonce")  # pragma: no cover - loop returns

    def _explain_failure(self, tx: dict[str, Any], receipt: TxReceipt) -> ChainError:
        """Replay a mined, failed transaction as a call to learn its revert reason."""
        replay = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value")}
        try:
            self.w3.eth.call(cast(TxParams, replay), block_identifier=receipt["blockNumber"] - 1)
        except ContractLogicError as exc:
            return revert_error(exc, self.decoder)
        except Web3Exception:
            pass
        return ChainError(
            f"transaction {receipt['transactionHash'].hex()} failed (gas used {receipt['gasUsed']})"
        )


def _is_nonce_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _NONCE_ERRORS)
