"""Client of the example dApp `AttestedService`: results signed by a lease's attested signer."""

from __future__ import annotations

from cvm.chain.contract import ContractClient, TxResult


class AttestedServiceClient(ContractClient):
    """Calls of the example consumer contract."""

    contract_name = "AttestedService"

    def registry(self) -> str:
        """The attestation registry the service asks."""
        return str(self._call("registry"))

    def expected_measurement(self) -> bytes:
        """The measurement the service trusts."""
        return bytes(self._call("expectedMeasurement"))

    def result_of(self, lease_id: int) -> bytes:
        """keccak256 of the latest result accepted from `lease_id` (32 zero bytes if none)."""
        return bytes(self._call("results", lease_id))

    def answered(self, request: bytes) -> bool:
        """Whether `request` (32 bytes) was answered already (each request is answered once)."""
        return bool(self._call("answered", request))

    def guest_result_typehash(self) -> bytes:
        """keccak256 of the EIP-712 type `GuestResult(uint256 leaseId,bytes32 request,bytes32
        resultHash)`."""
        return bytes(self._call("GUEST_RESULT_TYPEHASH"))

    def domain_separator(self) -> bytes:
        """The guest's EIP-712 domain separator on this chain (verifyingContract = registry)."""
        return bytes(self._call("domainSeparator"))

    def result_digest(self, lease_id: int, request: bytes, result: bytes) -> bytes:
        """The EIP-712 digest the guest's attested signer signs for `result` to `request`."""
        return bytes(self._call("resultDigest", lease_id, request, result))

    def post_result(
        self, lease_id: int, request: bytes, result: bytes, signature: bytes
    ) -> TxResult:
        """Post `result` to `request`, signed inside the guest of an attested lease by its
        attested signer (EIP-712 `GuestResult`, see `sign_guest_result`); anyone may relay it."""
        return self._send("postResult", lease_id, request, result, signature)
