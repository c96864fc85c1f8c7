"""The one error type of the chain layer, and the decoding of reverts into named errors.

A revert carries only a 4-byte selector and ABI-encoded arguments; `RevertDecoder` maps
the selector back to the custom error's name and arguments using the ABIs of every
contract cvm ships, so callers see `LeaseMarket_DepositTooLow(leaseId=1, ...)`, not hex.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from eth_utils.abi import collapse_if_tuple

# Solidity's built-in revert payloads: `revert("text")` / `require(x, "text")` and panics.
_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")


class ChainError(Exception):
    """Anything that went wrong talking to the chain: RPC, transaction, revert, artifacts."""


class ContractRevert(ChainError):
    """A call or transaction reverted with a known reason.

    `name` is the custom error's name (`LeaseMarket_DepositTooLow`), `Error` for a revert
    string or `Panic` for a Solidity panic; `args` maps argument names to decoded values.
    """

    def __init__(self, name: str, args: Mapping[str, Any], data: bytes = b"") -> None:
        self.name = name
        self.args_by_name = dict(args)
        self.data = data
        super().__init__(self.signature)

    @property
    def signature(self) -> str:
        """The error as a call: `Name(arg=value, ...)`."""
        shown = ", ".join(f"{key}={_show(value)}" for key, value in self.args_by_name.items())
        return f"{self.name}({shown})"


class UnknownRevert(ChainError):
    """A revert whose payload matches no error in the shipped ABIs (or has no payload)."""

    def __init__(self, data: bytes, message: str = "") -> None:
        self.data = data
        detail = f"0x{data.hex()}" if data else "no revert data"
        super().__init__(f"reverted ({message or 'unknown reason'}): {detail}")


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_show(item) for item in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]


class RevertDecoder:
    """Maps revert data to `ContractRevert` using the error entries of the given ABIs."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]]) -> None:
        self._errors: dict[bytes, _ErrorAbi] = {}
        for abi in abis:
            for entry in abi:
                if entry.get("type") != "error":
                    continue
                inputs = entry.get("inputs", [])
                types = tuple(collapse_if_tuple(dict(item)) for item in inputs)
                signature = f"{entry['name']}({','.join(types)})"
                selector = function_signature_to_4byte_selector(signature)
                names = tuple(item.get("name") or f"arg{i}" for i, item in enumerate(inputs))
                self._errors[selector] = _ErrorAbi(entry["name"], names, types)

    def __contains__(self, name: str) -> bool:
        return any(error.name == name for error in self._errors.values())

    def decode(self, data: bytes | str | None, message: str = "") -> ChainError:
        """The error for revert `data` (bytes or 0x-hex): a ContractRevert when it is known."""
        raw = _as_bytes(data)
        selector, body = raw[:4], raw[4:]
        try:
            if selector == _ERROR_STRING:
                (reason,) = abi_decode(["string"], body)
                return ContractRevert("Error", {"reason": reason}, raw)
            if selector == _PANIC:
                (code,) = abi_decode(["uint256"], body)
                return ContractRevert("Panic", {"code": code}, raw)
            known = self._errors.get(selector)
            if known is not None:
                values = abi_decode(list(known.arg_types), body)
                args = {
                    name: _normalise(value, kind)
                    for name, value, kind in zip(
                        known.arg_names, values, known.arg_types, strict=True
                    )
                }
                return ContractRevert(known.name, args, raw)
        except DecodingError:
            pass
        return UnknownRevert(raw, message)


def _normalise(value: Any, kind: str) -> Any:
    if kind == "address" and isinstance(value, str):
        return to_checksum_address(value)
    return value


def _as_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    text = data[2:] if data.startswith("0x") else data
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
