"""RevertDecoder: revert payloads become named errors with named, decoded arguments."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from cvm.chain.errors import ChainError, ContractRevert, RevertDecoder, UnknownRevert

ABI = [
    {
        "type": "error",
        "name": "LeaseMarket_DepositTooLow",
        "inputs": [
            {"name": "leaseId", "type": "uint256"},
            {"name": "deposit", "type": "uint256"},
            {"name": "minimum", "type": "uint256"},
        ],
    },
    {
        "type": "error",
        "name": "NodeRegistry_NotOperator",
        "inputs": [{"name": "caller", "type": "address"}, {"name": "key", "type": "bytes32"}],
    },
    {
        "type": "error",
        "name": "Pair",
        "inputs": [
            {
                "name": "spec",
                "type": "tuple",
                "components": [{"name": "a", "type": "uint64"}, {"name": "b", "type": "bool"}],
            }
        ],
    },
    {"type": "function", "name": "ignored", "inputs": [], "outputs": []},
]


def payload(signature: str, types: list[str], values: list[object]) -> bytes:
    return function_signature_to_4byte_selector(signature) + encode(types, values)


def test_custom_error_decodes_to_name_and_named_arguments() -> None:
    data = payload(
        "LeaseMarket_DepositTooLow(uint256,uint256,uint256)",
        ["uint256"] * 3,
        [1, 5, 10],
    )
    error = RevertDecoder([ABI]).decode("0x" + data.hex())
    assert isinstance(error, ContractRevert)
    assert isinstance(error, ChainError)
    assert error.name == "LeaseMarket_DepositTooLow"
    assert error.args_by_name == {"leaseId": 1, "deposit": 5, "minimum": 10}
    assert str(error) == "LeaseMarket_DepositTooLow(leaseId=1, deposit=5, minimum=10)"
    assert error.data == data


def test_addresses_come_back_checksummed_and_bytes_as_hex() -> None:
    address = "0x" + "ab" * 20
    data = payload(
        "NodeRegistry_NotOperator(address,bytes32)", ["address", "bytes32"], [address, b"\x01" * 32]
    )
    error = RevertDecoder([ABI]).decode(data)
    assert isinstance(error, ContractRevert)
    assert error.args_by_name["caller"] == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"
    assert "key=0x" + "01" * 32 in str(error)


def test_tuple_arguments_use_the_canonical_signature() -> None:
    data = payload("Pair((uint64,bool))", ["(uint64,bool)"], [(7, True)])
    error = RevertDecoder([ABI]).decode(data)
    assert isinstance(error, ContractRevert)
    assert error.args_by_name == {"spec": (7, True)}
    assert str(error) == "Pair(spec=(7, True))"


def test_revert_string_and_panic_are_named() -> None:
    decoder = RevertDecoder([])
    text = decoder.decode(payload("Error(string)", ["string"], ["no"]))
    panic = decoder.decode(payload("Panic(uint256)", ["uint256"], [0x11]))
    assert isinstance(text, ContractRevert) and text.name == "Error"
    assert text.args_by_name == {"reason": "no"}
    assert isinstance(panic, ContractRevert) and str(panic) == "Panic(code=17)"


@pytest.mark.parametrize("data", [None, "0x", "0xdeadbeef", "not hex"])
def test_unknown_or_missing_data_is_an_unknown_revert(data: str | None) -> None:
    error = RevertDecoder([ABI]).decode(data, "execution reverted")
    assert isinstance(error, UnknownRevert)
    assert not isinstance(error, ContractRevert)
    assert "execution reverted" in str(error)


def test_truncated_arguments_do_not_pass_for_the_error() -> None:
    data = payload("LeaseMarket_DepositTooLow(uint256,uint256,uint256)", ["uint256"], [1])
    assert isinstance(RevertDecoder([ABI]).decode(data), UnknownRevert)


def test_membership_by_name() -> None:
    decoder = RevertDecoder([ABI])
    assert "Pair" in decoder
    assert "ignored" not in decoder
