"""`cvm attestation verify ... --onchain`: the EVM's verdict beside the off-chain one.

The off-chain check (`cvm.attestation.appraise`) and `SnpVerifier` must agree on every
report: the same verdict, the same reason (the contract's `SnpReason` is coarser: each
off-chain reason maps to one, `cvm.attestation.onchain.ONCHAIN_REASON`) and, for a report
that verifies, the same fields. The contract does not check certificate dates (a report
stays genuine after its VCEK expires) nor policy; the policy the command was given (debug,
expected measurement) is applied here to the fields the contract returned, as the registry
does in a dispute.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvm.cli.plumbing import CliError, load_deployment

if TYPE_CHECKING:
    from cvm.attestation import Appraisal, Report
    from cvm.chain.report_check import OnchainCheck

# Off-chain reasons the EVM does not check at all (certificate dates).
NOT_ON_CHAIN = frozenset({"CERT_EXPIRED", "CERT_NOT_YET_VALID"})
DEBUG_BIT = 1 << 19


def offchain_fields(report: Report, raw: bytes, product: str | None) -> dict[str, Any]:
    """The fields `SnpVerifier` returns for `report`, computed off chain (same formats)."""
    from eth_utils import keccak

    def hex_(value: bytes) -> str:
        return "0x" + bytes(value).hex()

    return {
        "version": report.version,
        "policy": report.policy.raw,
        "vmpl": report.vmpl,
        "signing_key": int(report.signing_key),
        "measurement": hex_(report.measurement),
        "report_data0": hex_(report.report_data[:32]),
        "report_data1": hex_(report.report_data[32:]),
        "host_data": hex_(report.host_data),
        "chip_id": hex_(report.chip_id),
        "reported_tcb": report.reported_tcb,
        "committed_tcb": report.committed_tcb,
        "report_hash": hex_(keccak(raw)),
        "product_key": hex_(keccak(product.encode())) if product else None,
    }


def run_onchain(
    raw: bytes,
    vcek: bytes,
    chain: bytes | None,
    *,
    local: bool,
    deployment: Path | None,
    hardfork: str | None,
) -> OnchainCheck:
    """The EVM's verdict: against the configured deployment's SnpVerifier (read-only), or on
    a throwaway local anvil when there is none (or `local`)."""
    from cvm.chain.report_check import run_deployment, run_local

    record = None if local else _deployment_or_none(deployment)
    if record is None:
        return run_local(raw, vcek, chain, hardfork=hardfork)
    if not record.snp_verifier:
        raise CliError(
            "this deployment has no SnpVerifier (deployed before disputes): pass --local to"
            " check on a throwaway chain"
        )
    from cvm.chain import connect

    client = connect(record)
    return run_deployment(client.w3, record.snp_verifier, raw, vcek, chain)


def _deployment_or_none(path: Path | None) -> Any:
    from cvm.config import get_settings

    if path is None and not get_settings().deployment_file.exists():
        return None
    return load_deployment(path)


def compare(
    appraisal: Appraisal | None,
    offchain_errors: list[dict[str, str]],
    fields: dict[str, Any] | None,
    onchain: OnchainCheck,
    *,
    allow_debug: bool,
    measurement: bytes | None,
) -> dict[str, Any]:
    """The on-chain verdict in the off-chain one's terms, and whether the two agree."""
    from cvm.attestation.errors import Reason
    from cvm.attestation.onchain import ONCHAIN_REASON, SnpReason

    result = onchain.as_dict()
    # The on-chain verdict under the same policy as the off-chain one.
    errors: list[str] = [] if onchain.ok else [onchain.reason.name]
    if onchain.ok and onchain.fields is not None:
        if not allow_debug and int(onchain.fields["policy"]) & DEBUG_BIT:
            errors.append(str(Reason.DEBUG_ALLOWED))
        if measurement is not None and onchain.fields["measurement"] != "0x" + measurement.hex():
            errors.append(str(Reason.MEASUREMENT_MISMATCH))
    result["valid"] = not errors
    result["errors"] = errors
    # The off-chain verdict in the contract's terms.
    codes = [error["code"] for error in offchain_errors]
    verified = appraisal is not None and appraisal.verified is not None
    if verified or not codes:
        expected_reason = SnpReason.OK
    elif codes[0] in NOT_ON_CHAIN:
        expected_reason = None  # stopped at a check the EVM does not make: no comparison
    else:
        expected_reason = ONCHAIN_REASON.get(Reason(codes[0]), SnpReason.MALFORMED)
    offchain_policy = [code for code in codes if verified]
    mismatches: list[str] = []
    if expected_reason is not None and expected_reason != onchain.reason:
        mismatches.append(
            f"reason: off chain {expected_reason.name}, on chain {onchain.reason.name}"
        )
    if onchain.ok and verified and sorted(offchain_policy) != sorted(errors):
        mismatches.append(f"policy: off chain {offchain_policy}, on chain {errors}")
    if onchain.ok and fields is not None and onchain.fields is not None:
        for name, value in fields.items():
            if onchain.fields.get(name) != value:
                mismatches.append(f"{name}: off chain {value}, on chain {onchain.fields.get(name)}")
    result["comparable"] = expected_reason is not None
    result["agrees"] = not mismatches
    result["mismatches"] = mismatches
    return result
