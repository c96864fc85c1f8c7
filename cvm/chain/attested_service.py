"""Client of the example dApp `AttestedService`, which gates a call on `isAttested`."""

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
        """The latest result posted by `lease_id` (32 zero bytes if none)."""
        return bytes(self._call("results", lease_id))

    def post_result(self, lease_id: int, result: bytes) -> TxResult:
        """Post a result from the node key of an attested lease."""
        return self._send("postResult", lease_id, result)
