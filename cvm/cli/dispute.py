"""`cvm attestation dispute N`: check a lease's verdict yourself and dispute it in the EVM.

The chain says what was decided (status, report hash, nonce, renter, expected measurement,
submitted signer); the backend only serves the evidence bytes and the dispute window it
indexed, and the evidence is checked here against what the chain says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvm.cli.plumbing import (
    CliError,
    connect_chain,
    emit,
    find_wallet,
    format_time,
    literal,
    load_deployment,
    unlock_keystore,
)


def run_dispute(
    lease_id: int,
    *,
    report_hash: bytes | None,
    check_only: bool,
    trust_simulated: bool,
    wallet: str | None,
    password_file: Path | None,
    deployment: Path | None,
) -> None:
    from cvm.api_client import ApiClient, ApiError
    from cvm.attestation import EvidenceBundle
    from cvm.attestation.abi import Report
    from cvm.attestation.errors import AttestationError
    from cvm.attestation.kds import CachingKds, HttpKds
    from cvm.attestation.product import Product
    from cvm.chain import AttestationStatus, LeaseStatus
    from cvm.config import get_settings
    from cvm.disputes import (
        Action,
        DisputeEvidenceError,
        EvidenceCheck,
        Verdict,
        assess,
        challenge_certificates,
        check_evidence,
        dispute_certificates,
        preview_dispute,
        send_dispute,
        simulated_intermediates,
        submission_of,
        supports_disputes,
    )
    from cvm.kds_recheck import needs_kds, recheck
    from cvm.secret_release import trusted_roots

    record = load_deployment(deployment)
    chain = connect_chain(record)
    if not supports_disputes(chain):
        raise CliError("this deployment's attestation registry takes no disputes")
    if chain.leases.get_lease(lease_id).status == LeaseStatus.NONE:
        raise CliError(f"lease {lease_id} does not exist on this deployment")
    attestation = chain.attestations.attestation_of(lease_id)
    if attestation.status == AttestationStatus.NONE and report_hash is None:
        raise CliError(f"nothing to dispute: lease {lease_id} has no attestation")
    target = report_hash if report_hash is not None else attestation.report_hash
    recorded = "0x" + target.hex()
    submission = submission_of(chain, lease_id, target)
    if submission is None:
        raise CliError(
            f"nothing to dispute: report {recorded} was never submitted for lease {lease_id}"
        )
    verdict = submission.verdict.name.lower()
    if submission.verdict not in (AttestationStatus.VERIFIED, AttestationStatus.REJECTED):
        raise CliError(f"nothing to dispute: report {recorded} has no verdict yet ({verdict})")
    if submission.disputed:
        raise CliError(
            f"already disputed: the verdict on report {recorded} was disputed once; the EVM's"
            " outcome stands (`cvm attestation status` shows it)"
        )
    now = chain.block_timestamp()
    if now > submission.disputable_until:
        raise CliError(
            f"the dispute window of this verdict closed {format_time(submission.disputable_until)}:"
            " it is final"
        )
    with ApiClient(record.api_url or get_settings().api_url) as api:
        try:
            raw = api.get_evidence(recorded)
        except ApiError as exc:
            raise CliError(
                f"the backend has no evidence for report {recorded} ({exc}): a dispute needs"
                " the report and its certificates"
            ) from None
    try:
        bundle = EvidenceBundle.decode(raw)
    except AttestationError as exc:
        raise CliError(f"the backend's evidence for {recorded} is not evidence: {exc}") from None
    if bundle.report_hash != target:
        raise CliError("the backend served evidence for another report than the chain's")
    terms = chain.leases.lease_terms(lease_id)
    settings = get_settings()
    roots = trusted_roots(trust_simulated, settings.sim_amd_dir)
    intermediates = simulated_intermediates(settings.sim_amd_dir) if trust_simulated else []
    kds = CachingKds(settings.data_dir / "kds-cache", HttpKds())
    kds_url = settings.kds_url.rstrip("/")
    renter = chain.leases.get_lease(lease_id).renter

    def run(candidate: EvidenceBundle) -> EvidenceCheck:
        # The verifiers' check, against what the chain says (never the bundle's own words).
        return check_evidence(
            candidate,
            chain_id=record.chain_id,
            registry=record.attestation_registry,
            lease_id=lease_id,
            nonce=submission.number - 1,
            renter=renter,
            measurement=terms.expected_measurement,
            submitted_signer=submission.signer,
            trusted_roots=roots,
        )

    def lookup(report: Report, product: Product) -> bytes:
        return kds.vcek_for(report, product, kds_url)

    check = run(bundle)
    kds_note: str | None = None
    if needs_kds(check):
        # Failing on the bundle's certificates: decided with the chip's VCEK from AMD's KDS,
        # as the verifiers vote (a Rejected verdict on a genuine report is not confirmed by
        # the bundle's bad certificates, nor a Verified one disputed on them).
        again = recheck(bundle, check, run, lookup, intermediates)
        if again.retry:
            raise CliError(
                f"cannot check the report yet: {again.undecided} (CVM_KDS_URL {kds_url});"
                " try again later"
            )
        check, kds_note = again.check, again.undecided or again.note
    window_end: int | None = submission.disputable_until
    assessment = assess(verdict, check.ok, check.reasons)
    result: dict[str, Any] = {
        "lease_id": lease_id,
        "report_hash": recorded,
        "verdict": verdict,
        "ok": check.ok,
        "reasons": list(check.reasons),
        "messages": list(check.messages) + ([f"AMD's KDS: {kds_note}"] if kds_note else []),
        "action": assessment.action.value,
        "chain_will_overturn": assessment.chain_overturns,
        "explanation": assessment.explanation,
        "dispute_window_ends_at": window_end,
        "dispute_tx": None,
        "overturned": None,
        "challenge_deadline": None,
    }
    if assessment.action is Action.AGREE:
        _print(result)
        raise CliError(f"nothing to dispute: your check agrees ({assessment.explanation})")
    if assessment.action is Action.NOT_DISPUTABLE:
        _print(result)
        raise CliError(f"not disputable: {assessment.explanation}")
    if check_only:
        emit(result, lambda: _table(result))
        return
    account = unlock_keystore(find_wallet(wallet).path, password_file)
    disputer = chain.with_account(account)
    try:
        certs = dispute_certificates(
            bundle,
            trusted_roots=roots,
            intermediates=intermediates,
            vcek_source=lambda report, product: kds.vcek_for(report, product, kds_url),
        )
    except DisputeEvidenceError as exc:
        if assessment.verdict is not Verdict.VERIFIED:
            raise CliError(f"cannot dispute with this evidence: {exc}") from None
        # Nothing proves the report false on chain: the dispute opens a challenge instead.
        certs = challenge_certificates(bundle)
    preview = preview_dispute(disputer, lease_id, bundle, certs)
    if preview is False:
        raise CliError(
            "the registry's check would uphold the verdict (it sees the report otherwise than"
            " this check, e.g. a root it does not pin): not disputed, the bond is kept"
        )
    sent = send_dispute(disputer, lease_id, bundle, certs)
    result["dispute_tx"] = sent.tx_hash
    disputed = [event for event in sent.events if event.name == "AttestationDisputed"]
    if disputed:
        result["overturned"] = bool(disputed[0].args.get("overturned"))
    # The check could not decide with these certificates (a VLEK, a masked CHIP_ID): the
    # Verified verdict is challenged; its defender must prove it by the deadline, else anyone
    # resolves it as false (the bond is held meanwhile).
    opened = [event for event in sent.events if event.name == "ChallengeOpened"]
    if opened:
        result["challenge_deadline"] = int(opened[0].args.get("deadline", 0))
    emit(result, lambda: _table(result))


def _print(result: dict[str, Any]) -> None:
    """The check's result before a refusal (the refusal line follows)."""
    from cvm.cli.plumbing import json_output, out

    if not json_output():
        out().print(_table(result), highlight=False)


def _table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    rows = Table(title=f"dispute of lease {result['lease_id']}'s verdict", show_header=False)
    rows.add_row("report", literal(result["report_hash"]))
    rows.add_row("verdict on chain", literal(result["verdict"]))
    rows.add_row("your check", "passes" if result["ok"] else "FAILS")
    # The evidence's words (from the node, through the backend) are shown as text only.
    for message in result["messages"]:
        rows.add_row("", literal(message))
    rows.add_row("the chain will", literal(result["explanation"]))
    if result["dispute_window_ends_at"] is not None:
        rows.add_row("window ends", format_time(result["dispute_window_ends_at"]))
    if result["dispute_tx"] is not None:
        rows.add_row("dispute tx", literal(result["dispute_tx"]))
        if result["overturned"] is not None:
            rows.add_row("outcome", "REVERSED" if result["overturned"] else "upheld")
        elif result.get("challenge_deadline"):
            rows.add_row(
                "outcome",
                "challenge opened, defend by "
                + format_time(result["challenge_deadline"])
                + " (after it anyone may resolve it: reversed unless defended)",
            )
    return rows
