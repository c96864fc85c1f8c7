"""Run the EVM's SEV-SNP report check (`SnpVerifier`) on one report, for `cvm attestation
verify --onchain`: its verdict, the fields it returns and the gas of each step.

With no deployment: on a throwaway local anvil (the gas schedule chosen by `hardfork`) with
a fresh `SnpVerifier` pinning AMD's ARKs, the report is checked as a cold dispute would be,
one transaction per step (`cvm.attestation.onchain.prepare_report_call`: the ASK or ASVK,
the VCEK or VLEK, then the report), each step's gas from its receipt. Against a deployment,
nothing is sent: one `checkReport` as a disputer would send it now, answered by `eth_call`
and its gas estimated (the deployment's RPC URL is never handed to another process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from web3 import Web3
from web3.exceptions import Web3Exception

from cvm.attestation.errors import AttestationError
from cvm.attestation.onchain import SnpReason, ark_certificates, prepare_report_call
from cvm.chain.anvil import Anvil
from cvm.chain.artifacts import load_artifact, revert_decoder
from cvm.chain.client import event_decoder
from cvm.chain.deployment import Deployment
from cvm.chain.errors import ChainError, ContractRevert
from cvm.chain.sender import TransactionSender
from cvm.chain.snp_verifier import TX_GAS_CAP, SnpReportFields, SnpVerifierClient

__all__ = [
    "TX_GAS_CAP",
    "NotFramable",
    "OnchainCheck",
    "ReportCheckError",
    "run_deployment",
    "run_local",
]


class ReportCheckError(ChainError):
    """The on-chain check could not be run (no chain or contract, certificates unusable):
    not a verdict."""


@dataclass(frozen=True)
class OnchainCheck:
    """What `SnpVerifier` decided about a report, field for field, and what each step cost."""

    ok: bool
    reason: SnpReason
    fields: dict[str, Any] | None  # SnpReportFields as JSON values (0x-hex for bytes), if ok
    steps: list[dict[str, Any]] = field(default_factory=list)  # step, gas_used, under_cap
    verifier: str = ""
    chain: str = ""  # "local (<hardfork>)" or "chain <id> (read-only)"
    estimated: bool = False  # gas estimated (a deployment), not measured from receipts

    @property
    def gas_total(self) -> int:
        return sum(int(step["gas_used"]) for step in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason.name,
            "reason_code": int(self.reason),
            "fields": self.fields,
            "steps": self.steps,
            "gas_total": self.gas_total,
            "gas_estimated": self.estimated,
            "tx_gas_cap": TX_GAS_CAP,
            "under_cap": all(step["under_cap"] for step in self.steps),
            "verifier": self.verifier,
            "chain": self.chain,
        }


def fields_dict(fields: SnpReportFields) -> dict[str, Any]:
    """SnpReportFields as JSON values, keyed by the struct's field names in snake case."""
    values: dict[str, Any] = {}
    for name in SnpReportFields.__slots__:
        value = getattr(fields, name)
        values[name] = "0x" + bytes(value).hex() if isinstance(value, bytes) else value
    return values


def _step(function: str, gas_used: int) -> dict[str, Any]:
    return {"step": function, "gas_used": gas_used, "under_cap": gas_used <= TX_GAS_CAP}


class NotFramable(ReportCheckError):
    """The report or certificate is not even well-formed enough to send: the contract would
    refuse it as Malformed."""


def _prepare(report: bytes, endorsement_key: bytes, chain: bytes | None, **options: Any) -> Any:
    try:
        return prepare_report_call(report, endorsement_key, chain=chain, **options)
    except AttestationError as exc:
        raise NotFramable(exc.message) from None
    except ValueError as exc:
        raise NotFramable(str(exc)) from None


def run_local(
    report: bytes, endorsement_key: bytes, chain: bytes | None, *, hardfork: str | None
) -> OnchainCheck:
    """The check on a throwaway anvil with a fresh SnpVerifier pinning AMD's ARKs."""
    call = _prepare(report, endorsement_key, chain)
    # Room for a step over the cap: it is measured and flagged rather than refused.
    with Anvil(hardfork=hardfork, gas_limit=4 * TX_GAS_CAP) as node:
        account = node.dev_account(0)
        artifact = load_artifact("SnpVerifier")
        factory = node.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        sender = TransactionSender(node.w3, account, revert_decoder())
        receipt = sender.send(
            {"data": factory.constructor(ark_certificates()).data_in_transaction, "value": 0}
        )
        address = Web3.to_checksum_address(str(receipt.get("contractAddress")))
        events = event_decoder(_only_verifier(node.chain_id, account.address, address))
        client = SnpVerifierClient(node.w3, address, events, sender)
        try:
            verdict = client.run_report_call(call)
        except ContractRevert:
            raise
        except ChainError as exc:
            if f"gas used {TX_GAS_CAP})" in str(exc):
                raise ReportCheckError(
                    f"a step of the on-chain check needs more than the EIP-7825 cap of"
                    f" {TX_GAS_CAP:,} gas on {hardfork or 'latest'}: {exc}"
                ) from None
            raise
    return OnchainCheck(
        verdict.ok,
        verdict.reason,
        fields_dict(verdict.fields) if verdict.fields is not None else None,
        [
            _step(name, step.gas_used)
            for name, step in zip(_names(call), verdict.steps, strict=False)
        ],
        address,
        f"local ({hardfork or 'latest'})",
    )


def _names(call: Any) -> list[str]:
    """What each step of `call` verifies: the certificates still uncached, then the report."""
    certificates = [step for step in call.steps if step.function == "verifyCertificate"]
    which = ["ASK/ASVK", "VCEK/VLEK"][-len(certificates) :] if certificates else []
    return [f"verifyCertificate({name})" for name in which] + ["verifyReport"]


def _only_verifier(chain_id: int, deployer: str, address: str) -> Deployment:
    """A deployment record naming only the throwaway SnpVerifier (for its event decoder)."""
    zero = "0x" + "00" * 20
    return Deployment(chain_id, deployer, 0, zero, zero, zero, zero, zero, snp_verifier=address)


def run_deployment(
    w3: Web3, verifier: str, report: bytes, endorsement_key: bytes, chain: bytes | None
) -> OnchainCheck:
    """The check against a deployment's `verifier`, read-only: one `checkReport` with the
    certificates as DER (the contract finds those it cached), by `eth_call`, gas estimated."""
    client = SnpVerifierClient(w3, verifier, event_decoder(_only_verifier(0, verifier, verifier)))
    call = _prepare(report, endorsement_key, chain, split=False)
    try:
        ok, reason = client.call_check_report(call.report, call.certs)
        fields = client.call_verify_report(call.report, call.certs) if ok else None
        function = client.contract.functions.checkReport(call.report, call.certs)
        gas = int(
            w3.eth.estimate_gas({"to": client.address, "data": function._encode_transaction_data()})
        )
    except ContractRevert as exc:
        raise ReportCheckError(f"the deployment's SnpVerifier failed: {exc}") from None
    except Web3Exception as exc:
        raise ReportCheckError(f"the deployment's SnpVerifier cannot be called: {exc}") from exc
    cached = [
        name
        for name, der in (("VCEK/VLEK", call.signer_der), ("ASK/ASVK", call.issuer_der))
        if client.is_cert_verified(Web3.keccak(der))
    ]
    label = "checkReport" + (f" ({', '.join(cached)} cached)" if cached else " (cold)")
    return OnchainCheck(
        ok,
        reason,
        fields_dict(fields) if fields is not None else None,
        [_step(label, gas)],
        client.address,
        f"chain {int(w3.eth.chain_id)} (read-only)",
        estimated=True,
    )
