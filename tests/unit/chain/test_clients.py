"""Every function of every shipped contract has a typed wrapper in its client."""

from __future__ import annotations

import inspect
import re

import pytest

from cvm.chain import (
    AttestationCourtClient,
    AttestationRegistryClient,
    AttestedServiceClient,
    KeyServiceClient,
    LeaseMarketClient,
    NodeRegistryClient,
    TokenClient,
    load_artifact,
)
from cvm.chain.contract import ContractClient

# OpenZeppelin plumbing a cvm caller never needs (introspection, role admin, giving up control).
NOT_WRAPPED = {
    "supportsInterface",
    "getRoleAdmin",
    "DEFAULT_ADMIN_ROLE",
    "renounceRole",
    "renounceOwnership",
    "eip712Domain",
    "onChallenge",  # the lease market's hook into the registry: no one else may call it
    "onCloseWhilePending",  # likewise
    "onFailover",  # likewise (the market starts a new segment of a failed-over lease)
    "openChallenge",  # the court's hook into the registry: no one else may call it
}
CLIENTS = [
    AttestationCourtClient,
    NodeRegistryClient,
    LeaseMarketClient,
    AttestationRegistryClient,
    TokenClient,
    AttestedServiceClient,
    KeyServiceClient,
]


def wrapped_functions(cls: type[ContractClient]) -> set[str]:
    source = "".join(inspect.getsource(klass) for klass in cls.__mro__ if klass is not object)
    return set(re.findall(r'_(?:call|send)\(\s*"(\w+)"', source))


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.contract_name)
def test_every_contract_function_is_wrapped(client: type[ContractClient]) -> None:
    abi = load_artifact(client.contract_name).abi
    functions = {entry["name"] for entry in abi if entry["type"] == "function"}
    assert sorted(functions - NOT_WRAPPED - wrapped_functions(client)) == []
    # ...and no wrapper calls a function the contract does not have.
    assert sorted(wrapped_functions(client) - functions) == []
