// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationRegistry} from "../../src/AttestationRegistry.sol";
import {LeaseMarket} from "../../src/LeaseMarket.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {TestToken} from "../../src/test-token/TestToken.sol";
import {INodeRegistry} from "../../src/interfaces/INodeRegistry.sol";
import {Lease, LeaseStatus, Node, NodeSpec, TeeType} from "../../src/types/DataTypes.sol";
import {Test} from "../base/Test.sol";
import {LeaseHandler} from "./LeaseHandler.sol";

/// @notice The invariants of DESIGN.md under random operation sequences.
contract Invariants_Test is Test {
    TestToken internal token;
    NodeRegistry internal nodes;
    AttestationRegistry internal attestations;
    LeaseMarket internal market;
    LeaseHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        address admin = makeAddr("admin");
        address verifier = makeAddr("verifier");
        token = new TestToken();
        nodes = new NodeRegistry(token, admin, 10e18, 1 days, 1000);
        attestations = new AttestationRegistry(admin, 1);
        market = new LeaseMarket(token, INodeRegistry(address(nodes)), attestations, admin, 1 hours);
        vm.startPrank(admin);
        nodes.setLeaseMarket(address(market));
        attestations.setLeaseMarket(address(market));
        attestations.grantRole(attestations.VERIFIER_ROLE(), verifier);
        vm.stopPrank();

        address[] memory renters = new address[](3);
        address[] memory nodeKeys = new address[](3);
        address[] memory operators = new address[](3);
        for (uint256 i; i < 3; ++i) {
            renters[i] = makeAddr(string.concat("renter", vm_toString(i)));
            nodeKeys[i] = makeAddr(string.concat("nodeKey", vm_toString(i)));
            operators[i] = makeAddr(string.concat("operator", vm_toString(i)));
            vm.prank(renters[i]);
            token.approve(address(market), type(uint256).max);
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
                signNodeConsent(address(nodes), makeKey(string.concat("nodeKey", vm_toString(i))), operators[i])
            );
        }
        bytes memory measurement = abi.encodePacked(keccak256("m"), bytes16(keccak256("n")));
        handler =
            new LeaseHandler(token, nodes, attestations, market, verifier, measurement, renters, nodeKeys, operators);
        targetContract(address(handler));
    }

    function vm_toString(uint256 i) private pure returns (string memory) {
        return string(abi.encodePacked(bytes1(uint8(48 + i))));
    }

    /// @dev Tokens held by the market = every lease's escrow (deposit - claimed) + all credits.
    function invariant_MarketConservesTokens() external view {
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

    /// @dev No lease pays for time not covered by a verified attestation, counted from its submission.
    function invariant_NobodyPaidForUnattestedTime() external view {
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            uint256 leaseId = handler.leaseIds(i);
            Lease memory lease = market.getLease(leaseId);
            uint256 earned = market.earned(leaseId);
            assertLe(handler.ghostClaimed(leaseId), earned, "claimed more than earned");
            assertEq(lease.claimed, handler.ghostClaimed(leaseId), "claimed bookkeeping");
            if (lease.status == LeaseStatus.ACTIVE) {
                assertLe(earned, handler.modelCoverage(leaseId) * lease.ratePerSecond, "paid beyond attested time");
                assertEq(
                    attestations.attestedSeconds(leaseId, block.timestamp),
                    handler.modelCoverage(leaseId),
                    "coverage differs from the model"
                );
            }
            if (lease.status == LeaseStatus.OPEN) assertEq(earned, 0, "open lease earned");
        }
    }

    /// @dev A renter always recovers what was not earned: refundable now while running, refunded once closed.
    function invariant_RenterRecoversUnearnedRest() external view {
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            uint256 leaseId = handler.leaseIds(i);
            Lease memory lease = market.getLease(leaseId);
            uint256 deposited = handler.ghostDeposited(leaseId);
            if (lease.status == LeaseStatus.CLOSED) {
                assertEq(handler.ghostRefunded(leaseId), deposited - lease.deposit, "closed: refund != unearned");
            } else {
                assertEq(lease.deposit, deposited, "deposit bookkeeping");
                assertEq(market.refundable(leaseId), deposited - market.earned(leaseId), "refundable != unearned");
            }
        }
    }

    /// @dev Stake moves only by the rules: in by stake, out by withdraw after the delay, or by slash.
    function invariant_StakeMovesOnlyByTheRules() external view {
        uint256 held;
        for (uint256 i; i < handler.nodeCount(); ++i) {
            Node memory node = nodes.getNode(handler.nodeKeys(i));
            held += uint256(node.stake) + node.unbonding;
        }
        assertEq(token.balanceOf(address(nodes)), held, "registry balance != stakes");
        assertEq(
            held, handler.ghostStakeIn() - handler.ghostStakeOut() - handler.ghostSlashed(), "stake flows unexplained"
        );
        assertEq(handler.ghostViolations(), 0, "a handler observed a broken rule");
    }
}
