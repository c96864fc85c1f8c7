"""Client of `SnpVerifier`, the on-chain SEV-SNP report check (contracts/src/SnpVerifier.sol).

`run_report_call` sends the steps `cvm.attestation.onchain.prepare_report_call` worked out
(certificates not cached yet, then verifyReport) and returns the contract's verdict with the
gas of every transaction; a refusal is a verdict (`ok=False`, the reason), not an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from cvm.attestation.onchain import ReportCall, SnpReason, prepare_report_call
from cvm.chain.contract import ContractClient, TxResult
from cvm.chain.errors import ContractRevert

# EIP-7825: the most gas one transaction may use from Osaka on.
TX_GAS_CAP = 2**24


@dataclass(frozen=True, slots=True)
class SnpReportFields:
    """ISnpVerifier.SnpReportFields, decoded."""

    version: int
    policy: int
    vmpl: int
    signing_key: int  # 0 VCEK, 1 VLEK
    measurement: bytes
    report_data0: bytes
    report_data1: bytes
    host_data: bytes
    chip_id: bytes
    reported_tcb: int
    committed_tcb: int
    report_hash: bytes
    product_key: bytes

    @classmethod
    def from_tuple(cls, value: Any) -> SnpReportFields:
        v = list(value)
        return cls(
            version=int(v[0]),
            policy=int(v[1]),
            vmpl=int(v[2]),
            signing_key=int(v[3]),
            measurement=bytes(v[4]),
            report_data0=bytes(v[5]),
            report_data1=bytes(v[6]),
            host_data=bytes(v[7]),
            chip_id=bytes(v[8]),
            reported_tcb=int(v[9]),
            committed_tcb=int(v[10]),
            report_hash=bytes(v[11]),
            product_key=bytes(v[12]),
        )

    def as_tuple(self) -> tuple[object, ...]:
        return (
            self.version,
            self.policy,
            self.vmpl,
            self.signing_key,
            self.measurement,
            self.report_data0,
            self.report_data1,
            self.host_data,
            self.chip_id,
            self.reported_tcb,
            self.committed_tcb,
            self.report_hash,
            self.product_key,
        )


@dataclass(frozen=True, slots=True)
class StepGas:
    """One transaction of an on-chain check and the gas it used."""

    function: str
    gas_used: int


@dataclass(frozen=True, slots=True)
class OnchainVerdict:
    """The contract's answer: ok, the reason (OK if ok), the fields if ok, gas per step."""

    ok: bool
    reason: SnpReason
    fields: SnpReportFields | None
    steps: list[StepGas]


def _refusal(exc: ContractRevert) -> SnpReason | None:
    if exc.name != "SnpVerifier_Refused":
        return None
    return SnpReason(int(next(iter(exc.args_by_name.values()))))


class SnpVerifierClient(ContractClient):
    """Calls of the SEV-SNP report check. Its transactions carry the EIP-7825 cap as their gas
    limit (an estimate's margin could pass it; the unused gas is not paid for)."""

    contract_name = "SnpVerifier"

    def is_cert_verified(self, cert_hash: bytes) -> bool:
        """Whether the certificate with this keccak256(DER) is cached as verified."""
        return bool(self._call("isCertVerified", cert_hash))

    def is_signer_bound(self, report: bytes, signer_cert_hash: bytes) -> bool:
        """Whether the cached VCEK is the one for the chip and TCB `report` names (only then
        does BadSignature prove a forgery; see ISnpVerifier.isSignerBound)."""
        return bool(self._call("isSignerBound", report, signer_cert_hash))

    def ark_key_hash(self, product_key: bytes) -> bytes:
        """keccak256 of the pinned ARK modulus of a product (zero if none)."""
        return bytes(self._call("arkKeyHash", product_key))

    def sha384(self, data: bytes) -> bytes:
        """The contract's SHA-384 of `data` (a view call)."""
        return bytes(self._call("sha384", data))

    def parse_certificate(self, der: bytes) -> Any:
        """The contract's DER parse of a certificate (a view call; ContractRevert if malformed)."""
        return self._call("parseCertificate", der)

    def verify_certificate(self, der: bytes, issuer_hash: bytes) -> TxResult:
        """Verify and cache one certificate (ASK/ASVK under an ARK key hash, VCEK/VLEK under
        its ASK/ASVK's hash)."""
        return self._send("verifyCertificate", der, issuer_hash, gas=TX_GAS_CAP)

    def verify_report(self, report: bytes, certs: list[bytes]) -> TxResult:
        """verifyReport as a transaction (caches what it verifies; reverts on refusal)."""
        return self._send("verifyReport", report, certs, gas=TX_GAS_CAP)

    def call_verify_report(self, report: bytes, certs: list[bytes]) -> SnpReportFields:
        """verifyReport as a call: the parsed fields, or ContractRevert(SnpVerifier_Refused)."""
        return SnpReportFields.from_tuple(self._call("verifyReport", report, certs))

    def check_report(self, report: bytes, certs: list[bytes]) -> TxResult:
        """checkReport as a transaction (caches what it verifies; a bad report is no revert)."""
        return self._send("checkReport", report, certs, gas=TX_GAS_CAP)

    def call_check_report(self, report: bytes, certs: list[bytes]) -> tuple[bool, SnpReason]:
        """checkReport as a call: (ok, reason)."""
        ok, reason, _fields = self._call("checkReport", report, certs)
        return bool(ok), SnpReason(int(reason))

    def check(
        self,
        report: bytes,
        endorsement_key: bytes,
        *,
        chain: bytes | None = None,
        roots: Sequence[x509.Certificate] | None = None,
    ) -> OnchainVerdict:
        """Check `report` against its VCEK/VLEK on chain: verify (and cache) the certificates
        this contract does not know yet, then the report; the verdict and gas of each step.
        ValueError if the inputs cannot even be framed (see `prepare_report_call`)."""
        call = prepare_report_call(
            report, endorsement_key, chain=chain, is_cached=self.is_cert_verified, roots=roots
        )
        return self.run_report_call(call)

    def run_report_call(self, call: ReportCall) -> OnchainVerdict:
        """Send `call.steps` in order; stop at the first refusal and report it as the verdict."""
        steps: list[StepGas] = []
        for step in call.steps:
            try:
                if step.function == "verifyReport":
                    fields = self.call_verify_report(call.report, call.certs)
                    result = self.verify_report(call.report, call.certs)
                    steps.append(StepGas(step.function, result.gas_used))
                    return OnchainVerdict(True, SnpReason.OK, fields, steps)
                der, issuer = step.args
                result = self.verify_certificate(bytes(der), bytes(issuer))  # type: ignore[call-overload]
                steps.append(StepGas(step.function, result.gas_used))
            except ContractRevert as exc:
                reason = _refusal(exc)
                if reason is None:
                    raise
                return OnchainVerdict(False, reason, None, steps)
        raise ValueError("a report call ends with verifyReport")
