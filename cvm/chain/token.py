"""Client of the ERC-20 (with EIP-2612 permit) that leases pay in and nodes stake.

On local chains this is `TestToken`, which anyone can mint; on a real chain an existing
token with the same ERC-20 + permit surface.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from cvm.chain.contract import ContractClient, TxResult


@dataclass(frozen=True)
class Permit:
    """An EIP-2612 permit signature: lets `spender` pull `value` of the owner's tokens."""

    owner: str
    spender: str
    value: int
    deadline: int
    v: int
    r: bytes
    s: bytes


class TokenClient(ContractClient):
    """ERC-20 calls, minting of the test token and EIP-2612 permit signing."""

    contract_name = "TestToken"

    def name(self) -> str:
        """The token's name."""
        return str(self._call("name"))

    def symbol(self) -> str:
        """The token's symbol."""
        return str(self._call("symbol"))

    def decimals(self) -> int:
        """Decimal places of one token."""
        return int(self._call("decimals"))

    def domain_separator(self) -> bytes:
        """The EIP-712 domain separator permits are signed under."""
        return bytes(self._call("DOMAIN_SEPARATOR"))

    def balance_of(self, account: str) -> int:
        """Token balance of `account`."""
        return int(self._call("balanceOf", account))

    def allowance(self, owner: str, spender: str) -> int:
        """What `spender` may still pull from `owner`."""
        return int(self._call("allowance", owner, spender))

    def total_supply(self) -> int:
        """All tokens in existence."""
        return int(self._call("totalSupply"))

    def permit_nonce(self, owner: str) -> int:
        """The EIP-2612 nonce the next permit of `owner` must carry."""
        return int(self._call("nonces", owner))

    def approve(self, spender: str, amount: int) -> TxResult:
        """Allow `spender` to pull `amount` of this client's tokens."""
        return self._send("approve", spender, amount)

    def transfer(self, to: str, amount: int) -> TxResult:
        """Send `amount` to `to`."""
        return self._send("transfer", to, amount)

    def transfer_from(self, owner: str, to: str, amount: int) -> TxResult:
        """Move `amount` of `owner`'s tokens to `to` under an allowance."""
        return self._send("transferFrom", owner, to, amount)

    def permit(self, permit: Permit) -> TxResult:
        """Submit a signed permit (sets the allowance; anyone may send it)."""
        return self._send(
            "permit",
            permit.owner,
            permit.spender,
            permit.value,
            permit.deadline,
            permit.v,
            permit.r,
            permit.s,
        )

    def mint(self, to: str, amount: int) -> TxResult:
        """Mint test tokens (TestToken only: real tokens have no public mint)."""
        return self._send("mint", to, amount)

    def sign_permit(
        self, owner: LocalAccount, spender: str, value: int, deadline: int, nonce: int | None = None
    ) -> Permit:
        """Sign an EIP-2612 permit with `owner`'s key, bound to this token's EIP-712 domain.

        The domain comes from the token itself (ERC-5267 `eip712Domain`), so the signature is
        valid for exactly this token on exactly this chain; the nonce makes it single-use.
        """
        _fields, name, version, chain_id, verifying_contract, _salt, _ext = self._call(
            "eip712Domain"
        )
        signed = owner.sign_typed_data(
            domain_data={
                "name": name,
                "version": version,
                "chainId": chain_id,
                "verifyingContract": verifying_contract,
            },
            message_types={
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            message_data={
                "owner": owner.address,
                "spender": spender,
                "value": value,
                "nonce": self.permit_nonce(owner.address) if nonce is None else nonce,
                "deadline": deadline,
            },
        )
        return Permit(
            owner=owner.address,
            spender=spender,
            value=value,
            deadline=deadline,
            v=signed.v,
            r=signed.r.to_bytes(32, "big"),
            s=signed.s.to_bytes(32, "big"),
        )
