"""Client of `AttestationCourt`: verifier stake, disputes and on-chain confirmations (issue 21)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils import to_checksum_address

from cvm.chain.contract import ContractClient, TxResult


@dataclass(frozen=True, slots=True)
class VerifierStake:
    """A verifier's stake in the court (`IAttestationCourt.stakeOf`)."""

    stake: int
    unbonding: int
    unlocks_at: int
    # The latest end of a dispute window of its votes: its stake cannot leave before.
    locked_until: int


@dataclass(frozen=True, slots=True)
class Challenge:
    """A pending challenge of a Verified verdict (`IAttestationCourt.challengeOf`): a dispute
    the on-chain check could not decide; the defender must prove the report genuine by
    `deadline`, after which anyone resolves it as false. `deadline` 0: none pending."""

    disputer: str
    deadline: int
    bond: int

    @property
    def pending(self) -> bool:
        """Whether a challenge is pending."""
        return self.deadline != 0


class AttestationCourtClient(ContractClient):
    """Typed calls of `IAttestationCourt` (see its NatSpec for the rules)."""

    contract_name = "AttestationCourt"

    # --- views -----------------------------------------------------------------------
    def stake_of(self, verifier: str) -> VerifierStake:
        """A verifier's active stake, unbonding stake, and until when it is locked."""
        stake, locked_until, unlocks_at, unbonding = self._call(
            "stakeOf", to_checksum_address(verifier)
        )
        return VerifierStake(int(stake), int(unbonding), int(unlocks_at), int(locked_until))

    def snp_verifier(self) -> str:
        """The on-chain SEV-SNP report check (zero address: disputes unavailable)."""
        return str(self._call("snpVerifier"))

    def stake_token(self) -> str:
        """The token verifiers stake and disputers bond."""
        return str(self._call("stakeToken"))

    def burned(self) -> int:
        """Verifier stake and bonds burned."""
        return int(self._call("burned"))

    def registry(self) -> str:
        """The attestation registry this court judges for."""
        return str(self._call("registry"))

    def guest_key_length(self) -> int:
        """Bytes of the guest key a dispute supplies (116)."""
        return int(self._call("GUEST_KEY_LENGTH"))

    def response_window(self) -> int:
        """Seconds a challenged verdict's defender has to `defend` it (from the dispute)."""
        return int(self._call("RESPONSE_WINDOW"))

    def bonded(self) -> int:
        """Disputers' bonds held for pending challenges."""
        return int(self._call("bonded"))

    def challenge_of(self, lease_id: int, report_hash: bytes) -> Challenge:
        """The pending challenge of a submission's Verified verdict (deadline 0: none)."""
        disputer, deadline, bond = self._call("challengeOf", lease_id, report_hash)
        return Challenge(str(disputer), int(deadline), int(bond))

    def truth(
        self,
        lease_id: int,
        nonce: int,
        signer: str,
        report_hash: bytes,
        report: bytes,
        certs: Sequence[bytes],
        guest_key: bytes,
    ) -> bool:
        """What a dispute would find (simulated, nothing changes): True if the report of
        submission `nonce` is genuine and acceptable for the lease; a named error if the
        inputs cannot show it either way."""
        return bool(
            self._call(
                "truth",
                lease_id,
                nonce,
                to_checksum_address(signer),
                report_hash,
                report,
                list(certs),
                guest_key,
            )
        )

    # --- registry only (anyone else gets AttestationCourt_CallerNotRegistry) ---------
    def lock_vote(self, verifier: str, until: int, min_stake: int) -> TxResult:
        """Check and lock a voter's stake; only the registry may."""
        return self._send("lockVote", to_checksum_address(verifier), until, min_stake)

    # --- verifiers -------------------------------------------------------------------
    def stake(self, amount: int) -> TxResult:
        """Add `amount` to this account's verifier stake (approve the court first)."""
        return self._send("stake", amount)

    def stake_for(self, verifier: str, amount: int) -> TxResult:
        """Add `amount`, paid by this account, to `verifier`'s stake."""
        return self._send("stakeFor", to_checksum_address(verifier), amount)

    def request_unstake(self, amount: int) -> TxResult:
        """Start unbonding `amount` of this account's stake (it stops counting for votes)."""
        return self._send("requestUnstake", amount)

    def withdraw_stake(self) -> TxResult:
        """Withdraw unbonded stake once unlocked and no vote of this account is disputable."""
        return self._send("withdrawStake")

    # --- anyone ----------------------------------------------------------------------
    def dispute(
        self,
        lease_id: int,
        report_hash: bytes,
        report: bytes,
        certs: Sequence[bytes],
        guest_key: bytes,
    ) -> TxResult:
        """Dispute the verdict on a submission (bonds the dispute bond: approve the court)."""
        return self._send("dispute", lease_id, report_hash, report, list(certs), guest_key)

    def confirm_on_chain(
        self,
        lease_id: int,
        report_hash: bytes,
        report: bytes,
        certs: Sequence[bytes],
        guest_key: bytes,
    ) -> TxResult:
        """Confirm a Verified verdict by the on-chain check (no bond): final at once."""
        return self._send("confirmOnChain", lease_id, report_hash, report, list(certs), guest_key)

    def defend(
        self,
        lease_id: int,
        report_hash: bytes,
        report: bytes,
        certs: Sequence[bytes],
        guest_key: bytes,
    ) -> TxResult:
        """Answer a pending challenge by its deadline with certificates under which the report
        checks out: the verdict stands (the disputer's bond goes to its voters). Certificates
        that prove nothing are refused (`AttestationCourt_Inconclusive`)."""
        return self._send("defend", lease_id, report_hash, report, list(certs), guest_key)

    def resolve(self, lease_id: int, report_hash: bytes) -> TxResult:
        """Settle a challenge nobody defended by its deadline (anyone, after it): the
        Verified verdict is reversed as a proven false one."""
        return self._send("resolve", lease_id, report_hash)
