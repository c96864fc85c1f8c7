"""Gas of the on-chain SEV-SNP report check (SnpVerifier), per transaction, on the Cancun and
Osaka gas schedules (Osaka: EIP-7883 reprices modexp, EIP-7825 caps a transaction at 2**24).

`python -m bench.snp_verifier_gas --json` deploys a SnpVerifier pinned to AMD's ARKs on a
fresh anvil per schedule (the cap enforced), checks every real report in tests/data/snp cold
(verify the ASK, then the VCEK, then the report: separate transactions) and warm (the report
only), and prints one JSON object: gasUsed per transaction, the one-call cold check (all
certificates as DER in verifyReport, estimated), checkReport warm, deployment, and whether
every transaction fits the cap. (`bench.gas` covers the dispute transaction built on it.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cvm.attestation.onchain import ark_certificates, prepare_report_call
from cvm.chain import (
    TX_GAS_CAP,
    Anvil,
    EventDecoder,
    SnpVerifierClient,
    TransactionSender,
    load_artifact,
    revert_decoder,
)
from cvm.chain.deploy import deploy_snp_verifier

SNP_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "snp"
REPORTS = ("milan_virtee_sev", "milan_go_sev_guest", "genoa_azure")
HARDFORKS = ("cancun", "osaka")


def _measure(hardfork: str) -> dict[str, Any]:
    with Anvil(hardfork=hardfork, enforce_tx_gas_cap=True) as node:
        account = node.dev_account(0)
        artifact = load_artifact("SnpVerifier")
        factory = node.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        deploy_tx = {
            "from": account.address,
            "data": factory.constructor(ark_certificates()).data_in_transaction,
        }
        deploy_gas = int(node.w3.eth.estimate_gas(deploy_tx))  # type: ignore[arg-type]
        address = deploy_snp_verifier(node.w3, account, ark_certificates())
        events = EventDecoder({"SnpVerifier": (address, artifact.abi)})
        client = SnpVerifierClient(
            node.w3, address, events, TransactionSender(node.w3, account, revert_decoder())
        )
        reports: dict[str, Any] = {}
        for name in REPORTS:
            report = (SNP_DATA / "reports" / f"{name}.bin").read_bytes()
            vcek = (SNP_DATA / "vcek" / f"{name}.der").read_bytes()
            whole = prepare_report_call(report, vcek, split=False)
            one_call = client.contract.functions.verifyReport(whole.report, whole.certs)
            cold_one_call = int(one_call.estimate_gas({"from": account.address}))
            cold = client.run_report_call(
                prepare_report_call(report, vcek, is_cached=client.is_cert_verified)
            )
            warm_call = prepare_report_call(report, vcek, is_cached=client.is_cert_verified)
            warm = client.run_report_call(warm_call)
            check = client.check_report(warm_call.report, warm_call.certs)
            if not (cold.ok and warm.ok):
                raise SystemExit(
                    f"{name} did not verify on {hardfork}: {cold.reason} {warm.reason}"
                )
            reports[name] = {
                "cold": [{"function": s.function, "gasUsed": s.gas_used} for s in cold.steps],
                "coldTotal": sum(s.gas_used for s in cold.steps),
                "warm": warm.steps[0].gas_used,
                "checkReportWarm": check.gas_used,
                "coldOneCallEstimate": cold_one_call,
            }
        transactions = [deploy_gas] + [
            gas
            for entry in reports.values()
            for gas in [
                *(s["gasUsed"] for s in entry["cold"]),
                entry["warm"],
                entry["checkReportWarm"],
            ]
        ]
        return {
            "deploy": deploy_gas,
            "reports": reports,
            "maxTransaction": max(transactions),
            "fitsCap": max(transactions) <= TX_GAS_CAP,
        }


def measure() -> dict[str, Any]:
    """The report as a dict (see the module docstring)."""
    return {"txGasCap": TX_GAS_CAP, "schedules": {hf: _measure(hf) for hf in HARDFORKS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (the default)")
    parser.parse_args(argv)
    print(json.dumps(measure(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
