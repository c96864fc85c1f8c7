// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {InvariantSetup} from "./Invariants.t.sol";

/// @notice A scripted walk through the handler: every honest action is really exercised (not
/// skipped by its precondition), and the invariants hold along the way.
contract HandlerSmoke_Test is InvariantSetup {
    function _check() private view {
        _checkAll();
    }

    function test_HandlerExercisesEveryHonestAction() external {
        // Stake all three nodes; leases from each renter (incl. the self-dealer and the verifier).
        for (uint256 i; i < 3; ++i) {
            handler.stake(i, 100e18);
        }
        for (uint256 r; r < 4; ++r) {
            handler.createLease(r, 100e18, 2, 3600);
        }
        // Lease ids 1..4 sit at indices 0..3. Accept all on node 0 (stake 100: 10 bonds).
        for (uint256 i; i < 4; ++i) {
            handler.acceptLease(i, 0);
        }
        handler.submit(0, 1); // genuine
        handler.submit(1, 6); // junk
        handler.submit(2, 1); // self-dealer's lease, genuine
        handler.submit(3, 1); // colluding verifier's lease, genuine
        handler.confirm(0, 1); // verifier1 approves
        handler.confirm(1, 1); // junk rejected: bond slashed, burned
        handler.confirm(2, 1);
        handler.confirm(3, 0); // colluder rejects its own lease
        handler.warp(0, 600);
        _check();
        handler.claim(0);
        handler.topUp(0, 1e18);
        handler.challenge(0, 0); // renter challenges
        handler.warp(3, 0); // past the challenge window
        handler.closeLease(0); // missed after the challenge
        handler.requestUnstake(0, 10e18 + 3); // amount % 4 == 3: an arbitrary valid amount
        handler.warp(5, 0); // past the unbonding delay
        handler.withdrawUnstaked(0);
        handler.createLease(0, 1, 1, 3600);
        handler.acceptLease(4, 1);
        handler.declineOrExit(4); // index 4 is even: decline
        handler.acceptLease(4, 2);
        handler.warp(1, 0); // past the attestation window
        handler.reportMissedAttestation(4);
        handler.settle(2);
        handler.withdraw(0);
        handler.adminAction(0, 500);
        handler.adminAction(4, 2);
        handler.adminAction(6, 1);
        handler.junkCall(0, 0);
        handler.createLease(0, 1, 1, 3600);
        handler.acceptAndSubmit(5, 1, 1);
        _check();
        string[15] memory actions = [
            "createLease",
            "acceptLease",
            "acceptAndSubmit",
            "submit",
            "confirm",
            "claim",
            "topUp",
            "challenge",
            "closeLease",
            "requestUnstake",
            "withdrawUnstaked",
            "declineOrExit",
            "reportMissedAttestation",
            "withdraw",
            "setQuorum"
        ];
        for (uint256 i; i < actions.length; ++i) {
            assertGe(handler.honestCalls(actions[i]), 1, string.concat("never exercised: ", actions[i]));
        }
        assertGe(nodes.burnedStake(), 1, "a slash happened");
    }

    /// Issue 18's paths: a renter closes while the attestation awaits the verifiers (escrow held,
    /// bond locked), the window passes undecided and anyone releases the escrow; a declined lease
    /// is never re-taken by the node that declined it.
    function test_HeldCloseAndDeclinePaths() external {
        for (uint256 i; i < 3; ++i) {
            handler.stake(i, 100e18);
        }
        handler.createLease(0, 100e18, 2, 3600);
        handler.acceptLease(0, 0);
        handler.submit(0, 1); // genuine, nobody votes
        handler.warp(0, 300);
        handler.closeLease(0); // held
        assertTrue(handler.held(market.nextLeaseId() - 1), "held");
        _check();
        handler.warp(2, 0); // past the verification window
        handler.finalizeClose(0);
        assertFalse(handler.held(market.nextLeaseId() - 1), "released");
        _check();
        handler.createLease(1, 10e18, 1, 3600);
        handler.acceptLease(1, 1);
        handler.declineOrExit(1); // seed 1 is odd: exitLease, which declines
        handler.acceptLease(1, 1); // the same node: must be skipped, not attempted
        _check();
        assertGe(handler.honestCalls("finalizeClose"), 1, "never exercised: finalizeClose");
    }

    /// A self-dealing operator's lease on its own node, served, then a junk re-attestation
    /// rejected, then its earnings claimed: the invariant "slashes enrich no party" must hold
    /// (it failed when a rejection paid the renter min(earned, bond) of the slashed stake).
    function test_SelfDealerRejectionReturnsNoStake() external {
        for (uint256 i; i < 3; ++i) {
            handler.stake(i, 100e18);
        }
        handler.createLease(2, 100e18, 2, 3600); // renters[2] is operators[0]; interval 3600 s
        handler.acceptLease(0, 0); // on node 0, its own
        handler.submit(0, 1); // genuine
        handler.confirm(0, 1); // verified
        for (uint256 i; i < 3; ++i) {
            handler.warp(0, 600); // 1800 s: half the interval, a re-attestation is allowed
        }
        handler.submit(0, 6); // junk
        handler.confirm(0, 1); // rejected: the bond is slashed
        handler.claim(0);
        assertGe(handler.ghostClaimed(market.nextLeaseId() - 1), 1, "the self-dealer claimed its earnings");
        _check();
    }

    /// Issue 21's paths: the colluding verifier (verifiers[2]) verifies junk and rejects a genuine
    /// report; each wrong verdict is disputed and reversed, a right one disputed in vain; the
    /// invariants (escrow and court conservation, no party enriched) hold throughout.
    function test_DisputesOfColludingVerdicts() external {
        for (uint256 i; i < 3; ++i) {
            handler.stake(i, 100e18);
        }
        handler.createLease(0, 100e18, 2, 3600);
        handler.createLease(1, 100e18, 2, 3600);
        handler.createLease(0, 100e18, 2, 3600);
        handler.acceptLease(0, 0);
        handler.acceptLease(1, 1);
        handler.acceptLease(2, 2);
        handler.submit(0, 6); // junk
        handler.submit(1, 1); // genuine
        handler.submit(2, 1); // genuine
        handler.confirm(0, 2); // the colluder verifies junk
        handler.confirm(1, 2); // the colluder rejects a genuine report: the node is slashed
        handler.confirm(2, 1); // an honest verifier verifies a genuine report
        handler.warp(0, 600);
        handler.claim(0);
        _check();
        uint256 burned = nodes.burnedStake();
        handler.dispute(0, 0); // a stranger disputes the forged verdict: reversed
        handler.dispute(1, 3); // operators[1] disputes its node's false rejection: restored, paid
        assertLe(nodes.burnedStake(), burned, "the false rejection's slash was undone");
        handler.dispute(2, 2); // the colluder disputes a right verdict: loses its bond
        handler.dispute(2, 0); // again: refused (not counted as honest)
        _check();
        assertEq(handler.honestCalls("dispute"), 3, "three disputes");
        assertGe(court.burned(), 1, "a wrong voter lost stake");
    }

    /// Burden of proof: undecidable disputes of Verified verdicts open challenges; a genuine one is
    /// defended (stands), a junk one and an undefended genuine one are resolved (reversed).
    function test_ChallengesDefendedAndResolved() external {
        for (uint256 i; i < 3; ++i) {
            handler.stake(i, 100e18);
        }
        handler.createLease(0, 100e18, 2, 3600);
        handler.createLease(1, 100e18, 2, 3600);
        handler.createLease(0, 100e18, 2, 3600);
        handler.acceptLease(0, 0);
        handler.acceptLease(1, 1);
        handler.acceptLease(2, 2);
        handler.submit(0, 6); // junk
        handler.submit(1, 1); // genuine
        handler.submit(2, 1); // genuine
        handler.confirm(0, 2); // the colluder verifies junk
        handler.confirm(1, 1);
        handler.confirm(2, 1);
        handler.challenge(1, 0, true); // genuine, defended: stands
        _check();
        handler.challenge(0, 0, true); // junk: nobody can defend it; resolved after the deadline
        _check();
        handler.challenge(2, 1, false); // genuine but undefended: reversed
        _check();
        assertEq(handler.honestCalls("challenge"), 3, "three challenges");
        assertEq(handler.totalHonestReverts(), 0, "no honest call refused");
        assertEq(court.bonded(), 0, "no bond left held");
    }
}
