// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "../Base.t.sol";

/// @notice Fuzzed lease timelines: whatever the timing of attestations, verifications and
/// closing, the node is paid exactly the verified seconds and the renter gets the rest.
contract Streaming_Fuzz_Test is Base {
    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }

    function testFuzz_ReattestedLease_SplitsDepositExactly(
        uint256 firstDelay,
        uint256 reattestAfter,
        uint256 secondDelay,
        uint256 closeAfter
    ) external {
        firstDelay = bound(firstDelay, 0, 1 hours); // within the verification window
        // From half the interval on (earlier is refused); may be late (> interval).
        reattestAfter = bound(reattestAfter, REATTEST_INTERVAL / 2, 3 days);
        secondDelay = bound(secondDelay, 0, 1 hours);
        closeAfter = bound(closeAfter, secondDelay, 3 days);

        uint256 leaseId = acceptedLease();
        uint256 t0 = block.timestamp;
        submitReport(leaseId, REPORT_HASH);
        vm.warp(t0 + firstDelay);
        confirmReport(leaseId, REPORT_HASH, true);
        vm.warp(t0 + reattestAfter);
        bytes32 second = keccak256("second");
        submitReport(leaseId, second);
        uint256 t1 = block.timestamp;
        vm.warp(t1 + secondDelay);
        confirmReport(leaseId, second, true);
        vm.warp(t1 + closeAfter);

        uint256 covered = _min(reattestAfter, REATTEST_INTERVAL) + _min(closeAfter, REATTEST_INTERVAL);
        uint256 expected = _min(covered * rate(), DEPOSIT);
        assertEq(market.earned(leaseId), expected, "earned = verified seconds x rate");
        assertEq(market.earned(leaseId) + market.refundable(leaseId), DEPOSIT, "earned + refundable = deposit");

        uint256 operatorBefore = token.balanceOf(operator);
        uint256 renterBefore = token.balanceOf(renter);
        if (expected > 0) {
            vm.prank(operator);
            market.claim(leaseId);
        }
        vm.prank(renter);
        market.closeLease(leaseId);
        uint256 toOperator = token.balanceOf(operator) - operatorBefore;
        uint256 toRenter = token.balanceOf(renter) - renterBefore;
        assertEq(toOperator, expected, "operator paid the verified time");
        assertEq(toOperator + toRenter, DEPOSIT, "nothing lost, nothing created");
        assertEq(token.balanceOf(address(market)), 0, "escrow empty");
    }

    function testFuzz_NothingClaimableBeforeVerified(uint256 elapsed) external {
        elapsed = bound(elapsed, 0, 30 days);
        uint256 leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        vm.warp(block.timestamp + elapsed);
        assertEq(market.claimable(leaseId), 0, "pending attestation pays nothing yet");
        assertEq(market.refundable(leaseId), DEPOSIT, "renter could take everything back");
    }

    function testFuzz_TopUpExtendsTheStream(uint256 amount, uint256 elapsed) external {
        amount = bound(amount, 1, 5000e18);
        elapsed = bound(elapsed, 1, REATTEST_INTERVAL);
        uint256 leaseId = attestedLease();
        vm.prank(renter);
        market.topUp(leaseId, amount);
        vm.warp(block.timestamp + elapsed);
        uint256 expected = _min(elapsed * rate(), DEPOSIT + amount);
        assertEq(market.earned(leaseId), expected, "earned");
        assertEq(market.refundable(leaseId), DEPOSIT + amount - expected, "refundable");
    }

    function testFuzz_SlashTakesExactlyTheBondFixedAtAccept(
        uint256 stakeAmount,
        uint256 unbond,
        uint256 bps,
        uint256 laterBps
    ) external {
        stakeAmount = bound(stakeAmount, MIN_STAKE, 9000e18);
        bps = bound(bps, 0, nodes.MAX_SLASH_BPS());
        laterBps = bound(laterBps, 0, nodes.MAX_SLASH_BPS());
        vm.prank(admin);
        nodes.setSlashBps(bps);
        registerNode();
        vm.prank(operator);
        nodes.stake(nodeKey, stakeAmount);
        uint256 leaseId = createLease();
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        uint256 bond = MIN_STAKE * bps / 10_000;
        // Only stake beyond the bond can start unbonding while the lease runs.
        unbond = bound(unbond, 0, stakeAmount - bond);
        if (unbond > 0) {
            vm.prank(operator);
            nodes.requestUnstake(nodeKey, unbond);
        }
        vm.prank(admin);
        nodes.setSlashBps(laterBps);
        vm.warp(block.timestamp + ATTESTATION_WINDOW + 1);
        market.reportMissedAttestation(leaseId);
        assertEq(token.balanceOf(address(nodes)), stakeAmount, "a burned slash stays in the registry");
        assertEq(nodes.burnedStake(), bond, "exactly the bond fixed at accept, burned");
        // Unbonding first (active stake backs the bonds of active leases), then active.
        uint256 fromUnbonding = bond < unbond ? bond : unbond;
        assertEq(nodes.getNode(nodeKey).unbonding, unbond - fromUnbonding, "taken from unbonding first");
        assertEq(nodes.getNode(nodeKey).stake, stakeAmount - unbond - (bond - fromUnbonding), "then active stake");
        assertLe(bond, MIN_STAKE / 2, "never more than half of the required stake");
        assertEq(market.credits(renter), DEPOSIT, "renter refunded, not enriched");
    }
}
