// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationCourt} from "../../src/AttestationCourt.sol";
import {AttestationRegistry} from "../../src/AttestationRegistry.sol";
import {LeaseMarket} from "../../src/LeaseMarket.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {TestToken} from "../../src/test-token/TestToken.sol";
import {INodeRegistry} from "../../src/interfaces/INodeRegistry.sol";
import {CloseReason, Lease, LeaseStatus, Node, NodeSpec, NodeUsage, TeeType} from "../../src/types/DataTypes.sol";
import {Test} from "../base/Test.sol";
import {LeaseHandler} from "./LeaseHandler.sol";
import {MockSnpVerifier} from "../mocks/MockSnpVerifier.sol";

/// @notice Deploys the system with three nodes (one operator also rents), three verifiers (one
/// also rents) and the adversarial LeaseHandler; holds the properties as internal checks.
abstract contract InvariantSetup is Test {
    TestToken internal token;
    NodeRegistry internal nodes;
    AttestationRegistry internal attestations;
    LeaseMarket internal market;
    LeaseHandler internal handler;
    AttestationCourt internal court;

    function setUp() public {
        vm.warp(1_700_000_000);
        address admin = makeAddr("admin");
        token = new TestToken();
        nodes = new NodeRegistry(token, admin, 10e18, 8 days, 1000);
        attestations = new AttestationRegistry(admin, 1, 15 minutes);
        market = new LeaseMarket(token, INodeRegistry(address(nodes)), attestations, admin, 1 hours);

        address[] memory nodeKeys = new address[](3);
        address[] memory operators = new address[](3);
        address[] memory verifiers = new address[](3);
        for (uint256 i; i < 3; ++i) {
            nodeKeys[i] = makeAddr(string.concat("nodeKey", _str(i)));
            operators[i] = makeAddr(string.concat("operator", _str(i)));
            verifiers[i] = makeAddr(string.concat("verifier", _str(i)));
        }
        // Two plain renters, a self-dealing operator (renting its own node) and a verifier that rents.
        address[] memory renters = new address[](4);
        renters[0] = makeAddr("renter0");
        renters[1] = makeAddr("renter1");
        renters[2] = operators[0];
        renters[3] = verifiers[0];

        vm.startPrank(admin);
        nodes.setLeaseMarket(address(market));
        attestations.setLeaseMarket(address(market));
        for (uint256 i; i < 3; ++i) {
            attestations.grantRole(attestations.VERIFIER_ROLE(), verifiers[i]);
        }
        vm.stopPrank();

        for (uint256 i; i < renters.length; ++i) {
            vm.prank(renters[i]);
            token.approve(address(market), type(uint256).max);
        }
        for (uint256 i; i < 3; ++i) {
            vm.prank(operators[i]);
            token.approve(address(nodes), type(uint256).max);
            vm.prank(operators[i]);
            nodes.register(
                nodeKeys[i],
                NodeSpec({
                    teeType: TeeType.SEV_SNP,
                    vcpu: 16,
                    memoryMiB: 65_536,
                    diskGiB: 1000,
                    region: 1,
                    pricePerSecondPerUnit: uint96(1e12 * (i + 1))
                }),
                "",
                signNodeConsent(address(nodes), makeKey(string.concat("nodeKey", _str(i))), operators[i])
            );
        }
        bytes memory measurement = abi.encodePacked(keccak256("m"), bytes16(keccak256("n")));
        handler = new LeaseHandler(
            token, nodes, attestations, market, admin, measurement, renters, nodeKeys, operators, verifiers
        );
        // Every node starts staked (through the handler, so the ghost model counts it).
        for (uint256 i; i < 3; ++i) {
            handler.stake(i, 100e18);
        }
        MockSnpVerifier snp = new MockSnpVerifier();
        court = new AttestationCourt(snp, attestations, token);
        vm.prank(admin);
        attestations.setCourt(court);
        handler.setCourt(court, snp);
        targetContract(address(handler));
    }

    function _str(uint256 i) private pure returns (string memory) {
        return string(abi.encodePacked(bytes1(uint8(48 + i))));
    }

    /// @dev Every valid action of an honest party succeeded (handlers count reverts per action).
    function _checkHonestActionsNeverRevert() internal view {
        assertEq(handler.totalHonestReverts(), 0, string.concat("honest action reverted: ", handler.lastHonestRevert()));
        assertEq(handler.ghostViolations(), 0, "an invalid action succeeded or a rule broke");
    }

    /// @dev Tokens held by the market = every lease's escrow (deposit - claimed) + all credits.
    function _checkMarketConservesTokens() internal view {
        uint256 escrow;
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            Lease memory lease = market.getLease(handler.leaseIds(i));
            escrow += uint256(lease.deposit) - lease.claimed;
        }
        uint256 credits;
        for (uint256 i; i < handler.renterCount(); ++i) {
            credits += market.credits(handler.renters(i));
        }
        assertEq(token.balanceOf(address(market)), escrow + credits, "market balance != escrows + credits");
    }

    /// @dev Stake leaves the registry only by unbonding after the delay (checked in the handler) or as
    /// a slash: what the registry holds is every node's stake plus the burned slashes, and equals
    /// what was staked minus what was withdrawn and what slashes paid to renters.
    function _checkStakeLeavesOnlyByUnbondingOrSlash() internal view {
        uint256 held;
        for (uint256 i; i < handler.nodeCount(); ++i) {
            Node memory node = nodes.getNode(handler.nodeKeys(i));
            held += uint256(node.stake) + node.unbonding;
        }
        uint256 balance = token.balanceOf(address(nodes));
        assertEq(balance, held + nodes.burnedStake(), "registry balance != stakes + burned");
        assertEq(
            balance, handler.ghostStakeIn() - handler.ghostWithdrawn() - handler.ghostSlashPaid(), "unexplained flow"
        );
    }

    /// @dev Every active lease's bond is backed by active stake, bonds and capacity add up per node.
    function _checkBondsAreBackedAndCapacityHolds() internal view {
        uint256 nodeCount = handler.nodeCount();
        uint256 n = handler.leaseCount();
        for (uint256 k; k < nodeCount; ++k) {
            address nodeKey = handler.nodeKeys(k);
            uint256 bonds;
            uint256 vcpu;
            for (uint256 i; i < n; ++i) {
                Lease memory lease = market.getLease(handler.leaseIds(i));
                if (lease.status == LeaseStatus.ACTIVE && lease.nodeKey == nodeKey) {
                    bonds += lease.bond;
                    vcpu += lease.vcpu;
                }
                // Closed while its attestation awaited the verdict: the bond stays locked until then.
                if (handler.held(handler.leaseIds(i)) && lease.nodeKey == nodeKey) bonds += lease.bond;
            }
            NodeUsage memory usage = market.nodeUsage(nodeKey);
            Node memory node = nodes.getNode(nodeKey);
            assertEq(usage.bonded, bonds, "bonded != sum of active and held bonds");
            assertEq(usage.vcpu, vcpu, "vCPU in use != sum of active leases");
            assertLe(usage.vcpu, node.vcpu, "over capacity");
            assertGe(node.stake, usage.bonded, "bonds not backed by active stake");
        }
    }

    /// @dev No party of a slashed lease ends richer through it. Checked from money actually moved
    /// (not by restating the contract's formula), so a rule that pays slashed stake out fails it:
    /// - an operator renting its own node gets back, as renter (refund, credits, compensation)
    ///   plus as operator (claims), at most what it deposited: no stake leaves through a slash;
    /// - after a rejection the renter gets back at most its deposit minus what the lease had
    ///   earned before the rejection: the service it received stays paid for.
    function _checkSlashesEnrichNoParty() internal view {
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            uint256 leaseId = handler.leaseIds(i);
            Lease memory lease = market.getLease(leaseId);
            uint256 compensation = handler.ghostCompensation(leaseId);
            if (lease.status == LeaseStatus.CLOSED) {
                assertLe(compensation, lease.deposit, "compensation above what the renter paid");
            }
            assertLe(compensation, handler.ghostSlashedBond(leaseId), "compensation above the slash");
            uint256 slashed = handler.ghostSlashedBond(leaseId);
            if (slashed == 0) continue;
            assertLe(slashed, lease.bond, "slashed more than the lease's bond");
            uint256 deposited = handler.ghostDeposited(leaseId);
            assertLe(handler.ghostReturned(leaseId), deposited, "renter richer through a slash");
            if (nodes.operatorOf(lease.nodeKey) == lease.renter) {
                assertLe(
                    handler.ghostReturned(leaseId) + handler.ghostClaimed(leaseId),
                    deposited,
                    "self-dealer took stake out through a slash"
                );
            }
            if (lease.closeReason == CloseReason.ATTESTATION_REJECTED) {
                assertLe(
                    handler.ghostReturned(leaseId),
                    deposited - handler.ghostEarnedBeforeRejection(leaseId),
                    "renter refunded service it received through a rejection"
                );
            }
        }
    }

    /// @dev A renter always recovers what was not earned; nobody is paid for time before the node's
    /// first submission; claims never exceed earnings.
    function _checkRenterRecoversUnearnedRestAndNodeIsPaidOnlyForAttestedTime() internal view {
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            uint256 leaseId = handler.leaseIds(i);
            Lease memory lease = market.getLease(leaseId);
            uint256 deposited = handler.ghostDeposited(leaseId);
            uint256 earned = market.earned(leaseId);
            assertEq(lease.claimed, handler.ghostClaimed(leaseId), "claimed bookkeeping");
            assertLe(lease.claimed, earned, "claimed more than earned");
            if (lease.status == LeaseStatus.CLOSED) {
                assertEq(
                    handler.ghostReturned(leaseId) - handler.ghostCompensation(leaseId),
                    deposited - lease.deposit,
                    "closed: refund != unearned"
                );
            } else {
                assertEq(lease.deposit, deposited, "deposit bookkeeping");
                assertEq(market.refundable(leaseId), deposited - earned, "refundable != unearned");
                uint256 firstSubmit = handler.ghostFirstSubmittedAt(leaseId);
                uint256 maxSecs = firstSubmit == 0 ? 0 : block.timestamp - firstSubmit;
                if (lease.status == LeaseStatus.OPEN) maxSecs = 0;
                assertLe(earned, maxSecs * lease.ratePerSecond, "paid for time before the first submission");
            }
        }
    }

    /// @dev Tokens held by the court = every verifier's stake (active + unbonding) + burned: stake and
    /// bonds leave only by unstaking, or as a dispute's payout to the disputer or the node operator.
    function _checkCourtConservesTokens() internal view {
        uint256 held;
        for (uint256 i; i < handler.verifierCount(); ++i) {
            address v = handler.verifiers(i);
            held += uint256(court.stakeOf(v).stake) + court.stakeOf(v).unbonding;
        }
        assertEq(
            token.balanceOf(address(court)), held + court.burned() + court.bonded(), "court balance != stakes + burned"
        );
    }

    function _checkAll() internal view {
        _checkCourtConservesTokens();
        _checkHonestActionsNeverRevert();
        _checkMarketConservesTokens();
        _checkStakeLeavesOnlyByUnbondingOrSlash();
        _checkBondsAreBackedAndCapacityHolds();
        _checkSlashesEnrichNoParty();
        _checkRenterRecoversUnearnedRestAndNodeIsPaidOnlyForAttestedTime();
    }
}

/// @notice The invariants of DESIGN.md and issue 10 under random sequences of honest and
/// adversarial operations (see LeaseHandler): accounting, stake rules, bonds, compensation, and
/// that every valid honest action succeeds. One campaign checks every property after every call
/// (one campaign per property would run the same sequences six times over).
contract Invariants_Test is InvariantSetup {
    function invariant_AdversarialLeaseMarket() external view {
        _checkAll();
    }
}
