"""Does a verified report satisfy what the relying party expects? (go-sev-guest's `validate`)

`verify` says AMD signed the report; this layer says whether its contents are acceptable:
the right image (measurement), the right lease (REPORT_DATA binding), a production policy
(no debug), firmware recent enough (minimum TCB), the expected VMPL and product line, and
not too old. Every check that fails is reported, each with its own `Reason`. As in
go-sev-guest, the checks come in groups, each a function of its own: the report's fields,
the guest policy, the TCB, the platform (VMPL, product, signing key) and freshness.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cvm.attestation.abi import SigningKey, TcbVersion
from cvm.attestation.binding import LeaseBinding
from cvm.attestation.errors import Reason, ValidationError
from cvm.attestation.product import Product
from cvm.attestation.verify import VerifiedReport


@dataclass(frozen=True)
class Policy:
    """What a verified report must satisfy. Every field says what "not set" means."""

    measurements: Collection[bytes] = ()
    """Acceptable MEASUREMENT values, 48 bytes each. Not checked if empty."""

    report_data: bytes | None = None
    """Exact REPORT_DATA (64 bytes). Not checked if None."""

    binding: LeaseBinding | None = None
    """The lease REPORT_DATA must bind to (see `binding`). Not checked if None."""

    host_data: bytes | None = None
    """Exact HOST_DATA (32 bytes). Not checked if None."""

    allow_debug: bool = False
    """Accept a POLICY with DEBUG set (the host can read guest memory). Rejected by default."""

    allow_migrate_ma: bool = True
    """Accept a POLICY that allows a migration agent. Accepted by default."""

    minimum_tcb: TcbVersion | None = None
    """Each REPORTED_TCB component must be at least this one's (fmc only on Turin). None: any."""

    minimum_guest_svn: int | None = None
    """GUEST_SVN must be at least this. Not checked if None."""

    vmpl: int | None = 0
    """Required VMPL (0 = the guest's most privileged level). Not checked if None."""

    allowed_products: Collection[Product] | None = None
    """Product lines accepted. None: every product the verifier supports."""

    allowed_signers: Collection[SigningKey] = (SigningKey.VCEK, SigningKey.VLEK)
    """Kinds of endorsement key accepted (VCEK, VLEK)."""

    max_age: timedelta | None = None
    """Maximum time between collection (`collected_at`) and `now`. Not checked if None; when
    set, a report without a collection time fails (the report itself carries no time)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check: its reason code and a message naming the field, expected vs found."""

    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Outcome of `validate_report`: `ok` when `failures` is empty."""

    failures: tuple[Failure, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise `ValidationError` with the first failure's reason, if any."""
        if self.failures:
            first = self.failures[0]
            raise ValidationError("; ".join(f.message for f in self.failures), first.reason)


def _mismatch(reason: Reason, name: str, expected: bytes, found: bytes) -> Failure:
    return Failure(reason, f"{name}: expected {expected.hex()}, found {found.hex()}")


# --- field checks: values the report must carry verbatim (go-sev-guest's verbatim fields) --
def check_fields(verified: VerifiedReport, policy: Policy) -> list[Failure]:
    """MEASUREMENT, REPORT_DATA (exact or bound to a lease) and HOST_DATA."""
    report = verified.report
    failures: list[Failure] = []
    if policy.measurements and report.measurement not in set(policy.measurements):
        expected = " or ".join(m.hex() for m in policy.measurements)
        failures.append(
            Failure(
                Reason.MEASUREMENT_MISMATCH,
                f"MEASUREMENT: expected {expected}, found {report.measurement.hex()}",
            )
        )
    if policy.report_data is not None and report.report_data != policy.report_data:
        failures.append(
            _mismatch(
                Reason.REPORT_DATA_MISMATCH, "REPORT_DATA", policy.report_data, report.report_data
            )
        )
    if policy.binding is not None:
        expected_data = policy.binding.report_data()
        if report.report_data != expected_data:
            b = policy.binding
            failures.append(
                Failure(
                    Reason.BINDING_MISMATCH,
                    f"REPORT_DATA is not bound to lease {b.lease_id} nonce {b.nonce} on chain "
                    f"{b.chain_id} registry {b.registry}: expected {expected_data.hex()}, "
                    f"found {report.report_data.hex()}",
                )
            )
    if policy.host_data is not None and report.host_data != policy.host_data:
        failures.append(
            _mismatch(Reason.HOST_DATA_MISMATCH, "HOST_DATA", policy.host_data, report.host_data)
        )
    return failures


# --- policy checks: the guest policy the launch was made with -----------------------------
def check_guest_policy(verified: VerifiedReport, policy: Policy) -> list[Failure]:
    """The POLICY bits: no DEBUG unless allowed, no migration agent unless allowed."""
    report = verified.report
    failures: list[Failure] = []
    if report.policy.debug and not policy.allow_debug:
        failures.append(
            Failure(
                Reason.DEBUG_ALLOWED,
                f"POLICY: expected DEBUG (bit 19) clear, found POLICY {report.policy.raw:#x}",
            )
        )
    if report.policy.migrate_ma and not policy.allow_migrate_ma:
        failures.append(
            Failure(
                Reason.MIGRATION_AGENT_ALLOWED,
                f"POLICY: expected MIGRATE_MA (bit 18) clear, found POLICY {report.policy.raw:#x}",
            )
        )
    return failures


# --- TCB checks: firmware and guest versions ------------------------------------------
def check_tcb(verified: VerifiedReport, policy: Policy) -> list[Failure]:
    """REPORTED_TCB at least the minimum, component by component; GUEST_SVN at least its own."""
    failures: list[Failure] = []
    if policy.minimum_tcb is not None:
        reported = verified.reported_tcb
        low = reported.at_least(policy.minimum_tcb)
        if low:
            detail = ", ".join(
                f"{n} expected >= {policy.minimum_tcb.components()[n]:#04x} "
                f"found {reported.components().get(n, 0):#04x}"
                for n in low
            )
            failures.append(Failure(Reason.TCB_TOO_LOW, f"REPORTED_TCB: {detail}"))
    guest_svn = verified.report.guest_svn
    if policy.minimum_guest_svn is not None and guest_svn < policy.minimum_guest_svn:
        failures.append(
            Failure(
                Reason.GUEST_SVN_TOO_LOW,
                f"GUEST_SVN: expected >= {policy.minimum_guest_svn:#x}, found {guest_svn:#x}",
            )
        )
    return failures


# --- platform checks: where the report came from --------------------------------------
def check_platform(verified: VerifiedReport, policy: Policy) -> list[Failure]:
    """The VMPL that asked for the report, the product line and the kind of signing key."""
    failures: list[Failure] = []
    vmpl = verified.report.vmpl
    if policy.vmpl is not None and vmpl != policy.vmpl:
        failures.append(
            Failure(Reason.VMPL_MISMATCH, f"VMPL: expected {policy.vmpl:#x}, found {vmpl:#x}")
        )
    if policy.allowed_products is not None and verified.product not in policy.allowed_products:
        allowed = ", ".join(sorted(p.value for p in policy.allowed_products))
        failures.append(
            Failure(
                Reason.PRODUCT_NOT_ALLOWED,
                f"product: expected one of [{allowed}], found {verified.product.value}",
            )
        )
    if verified.signer not in policy.allowed_signers:
        allowed = ", ".join(s.name for s in policy.allowed_signers)
        failures.append(
            Failure(
                Reason.SIGNER_NOT_ALLOWED,
                f"SIGNING_KEY: expected one of [{allowed}], found {verified.signer.name}",
            )
        )
    return failures


# --- freshness: the report carries no time, so its collection time is the caller's -------
def check_freshness(
    policy: Policy, collected_at: datetime | None, now: datetime | None
) -> list[Failure]:
    """At most `max_age` between collection and `now` (now: the current time if None)."""
    if policy.max_age is None:
        return []
    if collected_at is None:
        return [
            Failure(
                Reason.REPORT_AGE_UNKNOWN,
                f"report age: a maximum of {policy.max_age} is required but the "
                "collection time is unknown",
            )
        ]
    age = (now or datetime.now(UTC)) - collected_at
    if age <= policy.max_age:
        return []
    return [
        Failure(
            Reason.REPORT_TOO_OLD,
            f"report age: expected <= {policy.max_age}, found {age} "
            f"(collected {collected_at.isoformat()})",
        )
    ]


def validate_report(
    verified: VerifiedReport,
    policy: Policy,
    *,
    collected_at: datetime | None = None,
    now: datetime | None = None,
) -> ValidationResult:
    """Check a verified report against `policy`; collect every failure, in a fixed order:
    fields, guest policy, TCB, platform, freshness."""
    return ValidationResult(
        (
            *check_fields(verified, policy),
            *check_guest_policy(verified, policy),
            *check_tcb(verified, policy),
            *check_platform(verified, policy),
            *check_freshness(policy, collected_at, now),
        )
    )
