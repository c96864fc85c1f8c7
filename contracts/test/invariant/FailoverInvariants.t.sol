// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationRegistry} from "../../src/AttestationRegistry.sol";
import {KeyService} from "../../src/KeyService.sol";
import {LeaseMarket} from "../../src/LeaseMarket.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {TestToken} from "../../src/test-token/TestToken.sol";
import {IAttestationRegistry} from "../../src/interfaces/IAttestationRegistry.sol";
import {
    CloseReason, KeyPolicy, Lease, LeaseSpec, LeaseStatus, NodeUsage, Segment, TeeType
} from "../../src/types/DataTypes.sol";
import {Base} from "../Base.t.sol";
import {Test} from "../base/Test.sol";

/// @notice Random sequences of leases that fail over between three nodes (issue 20): create (with a
/// key policy allowing failover or not), accept, submit, confirm (or reject), challenge, claim, close,
/// failover, withdraw, time jumps, and disputes overturning an old node's verdict after the lease
/// moved or the current node's (which moves it again). Every call is made with try/catch (a refused one changes nothing); the ghost model records
/// who submitted what, which node's submission is Verified in the lease's current segment, what
/// nodes were paid, and the time window of each segment.
contract FailoverHandler is Test {
    TestToken internal immutable token;
    NodeRegistry internal immutable nodes;
    AttestationRegistry internal immutable attestations;
    LeaseMarket internal immutable market;
    KeyService internal immutable keys;
    address internal immutable court;
    address internal immutable renter;
    address internal immutable verifier;
    address internal immutable holder;
    bytes internal measurement;

    address[] public nodeKeys;
    address[] public operators;
    uint256[] public leaseIds;

    /// @dev The node whose submission is Verified now in the lease's current segment (zero: none).
    mapping(uint256 leaseId => address) public ghostVerifiedNode;
    /// @dev The latest submission of the current segment and who made it.
    mapping(uint256 leaseId => bytes32) internal _pendingHash;
    mapping(uint256 leaseId => address) internal _pendingNode;
    /// @dev Everything paid to nodes' operators from the lease (claims + earnings credited at failovers).
    mapping(uint256 leaseId => uint256) public ghostPaidToNodes;
    /// @dev The most the lease can ever pay: the sum over its ended segments of (end - first submission)
    /// x rate, the current segment's first submission and rate kept apart. Segments never overlap in
    /// time, so a lease paying within this bound never pays a second twice.
    mapping(uint256 leaseId => uint256) public ghostEndedSegmentsBound;
    mapping(uint256 leaseId => uint256) public ghostSegmentFirstSubmit;
    /// @dev Verified report hashes of nodes the lease failed over from (disputable afterwards).
    mapping(uint256 leaseId => bytes32[]) internal _oldReports;
    /// @dev Rejected report hashes that moved the lease (disputable afterwards).
    mapping(uint256 leaseId => bytes32[]) internal _oldRejections;
    uint256 public rejectionMoves;
    uint256 public overturnedRejections;
    uint256 public overturnMoves;
    uint256 public violations;
    string public lastViolation;
    uint256 public failoversDone;
    uint256 internal _reportNonce;

    struct Wiring {
        TestToken token;
        NodeRegistry nodes;
        AttestationRegistry attestations;
        LeaseMarket market;
        KeyService keys;
        address court;
        address renter;
        address verifier;
        address holder;
    }

    constructor(Wiring memory w, bytes memory measurement_, address[] memory nodeKeys_, address[] memory operators_) {
        token = w.token;
        nodes = w.nodes;
        attestations = w.attestations;
        market = w.market;
        keys = w.keys;
        court = w.court;
        renter = w.renter;
        verifier = w.verifier;
        holder = w.holder;
        measurement = measurement_;
        nodeKeys = nodeKeys_;
        operators = operators_;
    }

    function leaseCount() external view returns (uint256) {
        return leaseIds.length;
    }

    // ------------------------------------------------------------------ actions

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, 3 hours));
    }

    function create(uint256 deposit, bool failover) external {
        if (leaseIds.length >= 6) return;
        deposit = bound(deposit, 1e16, 100e18);
        LeaseSpec memory spec = LeaseSpec({
            teeType: TeeType.SEV_SNP,
            vcpu: 2,
            memoryMiB: 1024,
            diskGiB: 10,
            minNodeStake: 0,
            reattestInterval: 1 hours,
            specHash: bytes32(0)
        });
        vm.prank(renter);
        uint256 leaseId = market.createLease(spec, 1e14, uint128(deposit), measurement);
        leaseIds.push(leaseId);
        address[] memory holders = new address[](1);
        holders[0] = holder;
        bytes[] memory measurements = new bytes[](1);
        measurements[0] = measurement;
        vm.prank(renter);
        keys.setKeyPolicy(leaseId, KeyPolicy(measurements, failover, 1, holders, 1, keccak256("m")));
    }

    function accept(uint256 leaseSeed, uint256 nodeSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        address nodeKey = nodeKeys[nodeSeed % nodeKeys.length];
        vm.prank(nodeKey);
        try market.acceptLease(leaseId) {
            ghostVerifiedNode[leaseId] = address(0);
            _pendingNode[leaseId] = address(0);
            ghostSegmentFirstSubmit[leaseId] = 0;
        } catch {}
    }

    /// @dev The combined path (issue 22): a node takes an open lease (new or failed over) and submits
    /// the first report of its segment, bound to the running nonce read while the lease is open.
    function acceptAndSubmit(uint256 leaseSeed, uint256 nodeSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        address nodeKey = nodeKeys[nodeSeed % nodeKeys.length];
        bytes32 reportHash = keccak256(abi.encode("report", ++_reportNonce));
        uint256 nonce = attestations.attestationNonce(leaseId);
        vm.prank(nodeKey);
        try attestations.acceptAndSubmit(leaseId, nonce, reportHash, measurement, 1, bytes32(0), address(0xBEEF)) {
            ghostVerifiedNode[leaseId] = address(0);
            _pendingHash[leaseId] = reportHash;
            _pendingNode[leaseId] = nodeKey;
            ghostSegmentFirstSubmit[leaseId] = block.timestamp;
        } catch {}
    }

    function submit(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        (address nodeKey,) = market.leaseNode(leaseId);
        if (nodeKey == address(0)) return;
        bytes32 reportHash = keccak256(abi.encode("report", ++_reportNonce));
        uint256 nonce = attestations.attestationNonce(leaseId);
        vm.prank(nodeKey);
        try attestations.submit(leaseId, nonce, reportHash, measurement, 1, bytes32(0), address(0xBEEF)) {
            _pendingHash[leaseId] = reportHash;
            _pendingNode[leaseId] = nodeKey;
            if (ghostSegmentFirstSubmit[leaseId] == 0) ghostSegmentFirstSubmit[leaseId] = block.timestamp;
        } catch {}
    }

    function confirm(uint256 leaseSeed, bool ok) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        bytes32 reportHash = _pendingHash[leaseId];
        if (reportHash == bytes32(0)) return;
        // Mostly honest verdicts; a rejection now and then.
        ok = ok || (uint256(reportHash) % 5 != 0);
        Lease memory before = market.getLease(leaseId);
        address operator = nodes.operatorOf(before.nodeKey);
        uint256 credit = market.credits(operator);
        uint256 renterCredit = market.credits(renter);
        vm.prank(verifier);
        try attestations.confirm(leaseId, reportHash, ok) {
            if (ok) {
                ghostVerifiedNode[leaseId] = _pendingNode[leaseId];
                _lastVerified[leaseId] = reportHash;
                return;
            }
            ghostVerifiedNode[leaseId] = address(0);
            Lease memory afterwards = market.getLease(leaseId);
            if (before.status == LeaseStatus.ACTIVE && afterwards.status == LeaseStatus.OPEN) {
                // Moved by the rejection (reason 4): the escrow stays, the node is paid its verified time.
                rejectionMoves += 1;
                ghostPaidToNodes[leaseId] += market.credits(operator) - credit;
                _check(market.credits(renter) == renterCredit, "a rejection that moved the lease refunded");
                _check(market.segmentOf(leaseId, before.nodeKey).rejected, "the segment does not say rejected");
                if (_lastVerified[leaseId] != bytes32(0)) _oldReports[leaseId].push(_lastVerified[leaseId]);
                _oldRejections[leaseId].push(reportHash);
                _lastVerified[leaseId] = bytes32(0);
                _pendingHash[leaseId] = bytes32(0);
            } else {
                // Closed: only a lease not allowed to move, or one with nothing left to move.
                _check(!(afterwards.status == LeaseStatus.CLOSED && before.status == LeaseStatus.ACTIVE
                    && keys.failoverAllowed(leaseId) && market.credits(renter) != renterCredit),
                    "a rejection ended a lease allowed to move");
            }
            _endSegmentWithRate(leaseId, before.ratePerSecond);
        } catch {}
    }

    /// @dev A dispute finding false a rejection that moved the lease: the lease, its escrow and its
    /// current node are untouched; the old node's operator is paid at most its time until the move.
    function overturnOldRejection(uint256 leaseSeed, uint256 which) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0 || _oldRejections[leaseId].length == 0) return;
        bytes32 reportHash = _oldRejections[leaseId][which % _oldRejections[leaseId].length];
        Lease memory before = market.getLease(leaseId);
        uint256[] memory credits = new uint256[](operators.length);
        for (uint256 k; k < operators.length; ++k) credits[k] = market.credits(operators[k]);
        vm.prank(court);
        try attestations.resolveDispute(leaseId, reportHash, address(this), true) {
            overturnedRejections += 1;
            Lease memory afterwards = market.getLease(leaseId);
            _check(afterwards.status == before.status, "an old rejection's reversal changed the lease's status");
            _check(afterwards.nodeKey == before.nodeKey, "an old rejection's reversal moved the current node");
            _check(afterwards.deposit == before.deposit, "an old rejection's reversal touched the escrow");
            for (uint256 k; k < operators.length; ++k) ghostPaidToNodes[leaseId] += market.credits(operators[k]) - credits[k];
        } catch {}
    }

    /// @dev A dispute finding false the current node's latest Verified verdict: a lease allowed to move
    /// moves (reason 5) while escrow is left, with the node paid at most its earlier verified time; else it
    /// closes as rejected with nothing left to refund.
    function overturnCurrent(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0 || _lastVerified[leaseId] == bytes32(0)) return;
        Lease memory before = market.getLease(leaseId);
        address operator = nodes.operatorOf(before.nodeKey);
        uint256 credit = market.credits(operator);
        uint256 count = market.failovers(leaseId);
        vm.prank(court);
        try attestations.resolveDispute(leaseId, _lastVerified[leaseId], address(this), false) {
            Lease memory afterwards = market.getLease(leaseId);
            if (market.failovers(leaseId) != count) {
                overturnMoves += 1;
                _check(afterwards.status == LeaseStatus.OPEN && afterwards.nodeKey == address(0), "not open again");
                _check(keys.failoverAllowed(leaseId), "moved a lease not allowed to move");
                _check(market.segmentOf(leaseId, before.nodeKey).rejected, "the segment's bond not marked taken");
                ghostPaidToNodes[leaseId] += market.credits(operator) - credit;
            } else if (before.status == LeaseStatus.ACTIVE) {
                _check(afterwards.status == LeaseStatus.CLOSED, "an overturn left the lease active");
                _check(!keys.failoverAllowed(leaseId) || afterwards.deposit == before.deposit,
                    "an overturn ended a lease allowed to move with escrow left");
            }
            if (before.status == LeaseStatus.ACTIVE) _endSegmentWithRate(leaseId, before.ratePerSecond);
            _lastVerified[leaseId] = bytes32(0);
            _pendingHash[leaseId] = bytes32(0);
            ghostVerifiedNode[leaseId] = address(0);
        } catch {}
    }

    function challenge(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        vm.prank(renter);
        try market.challenge(leaseId) {} catch {}
    }

    function claim(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        (address nodeKey,) = market.leaseNode(leaseId);
        address operator = nodes.operatorOf(nodeKey);
        if (operator == address(0)) return;
        vm.prank(operator);
        try market.claim(leaseId) returns (uint256 amount) {
            ghostPaidToNodes[leaseId] += amount;
        } catch {}
    }

    function close(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        // Not while a verdict is pending (held escrow is the other suite's subject).
        if (attestations.statusOf(leaseId) == IAttestationRegistry.Status.Pending) return;
        vm.prank(renter);
        try market.closeLease(leaseId) {
            _endSegment(leaseId);
        } catch {}
    }

    /// @dev Through `failover` (anyone), `reportMissedAttestation` (anyone) or `exitLease` (the node): the
    /// last two fail the lease over too when it is at fault and its policy allows it.
    function failover(uint256 leaseSeed, uint8 how) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory before = market.getLease(leaseId);
        if (before.status != LeaseStatus.ACTIVE) return;
        address nodeKey = before.nodeKey;
        address operator = nodes.operatorOf(nodeKey);
        uint256 credit = market.credits(operator);
        uint256 stake = nodes.getNode(nodeKey).stake;
        uint256 bonded = market.bondedStake(nodeKey);
        uint256 count = market.failovers(leaseId);
        bool done = false;
        if (how % 3 == 0) {
            try market.failover(leaseId) {
                done = true;
            } catch {}
        } else if (how % 3 == 1) {
            try market.reportMissedAttestation(leaseId) {
                done = true;
            } catch {}
        } else {
            vm.prank(nodeKey);
            try market.exitLease(leaseId) {
                done = true;
            } catch {}
        }
        if (!done) return;
        Lease memory afterwards = market.getLease(leaseId);
        if (market.failovers(leaseId) == count) {
            // Closed as before (policy forbids failover, or no fault), or declined in time.
            _check(!keys.failoverAllowed(leaseId) || afterwards.status == LeaseStatus.CLOSED
                || afterwards.status == LeaseStatus.OPEN, "unexpected end");
            _check(!(afterwards.status == LeaseStatus.CLOSED && keys.failoverAllowed(leaseId)
                && afterwards.closeReason == CloseReason.ATTESTATION_MISSED), "a fault ended a lease allowed to move");
            // Nor does its node's own exit (the close would make the key holders delete the shares).
            _check(!(afterwards.status == LeaseStatus.CLOSED && keys.failoverAllowed(leaseId)
                && afterwards.closeReason == CloseReason.NODE_EXIT), "a node's exit ended a lease allowed to move");
            ghostVerifiedNode[leaseId] = address(0);
            _endSegmentWithRate(leaseId, before.ratePerSecond);
            return;
        }
        failoversDone += 1;
        Segment memory segment = market.segmentOf(leaseId, nodeKey);
        uint256 paid = market.credits(operator) - credit;
        ghostPaidToNodes[leaseId] += paid;
        // Escrow conserved: the lease keeps exactly what the old node did not earn.
        _check(afterwards.deposit == before.deposit - segment.earned, "escrow not conserved across failover");
        _check(paid == segment.earned - before.claimed, "old node paid other than its unclaimed earnings");
        _check(afterwards.status == LeaseStatus.OPEN && afterwards.nodeKey == address(0), "not open again");
        _check(market.declinedBy(leaseId, nodeKey), "old node may take it back");
        // Bonds follow the close paths' rules.
        _check(market.bondedStake(nodeKey) == bonded - before.bond, "bond not released");
        if (segment.ratePerSecond == 0) {
            _check(nodes.getNode(nodeKey).stake == stake - before.bond, "first attestation missed: bond not slashed");
            _check(segment.earned == 0, "paid without a verified attestation");
        } else {
            _check(nodes.getNode(nodeKey).stake == stake, "an expired attestation is no slash");
        }
        _check(!attestations.isAttested(leaseId, measurement), "attested right after a failover");
        if (_lastVerified[leaseId] != bytes32(0)) _oldReports[leaseId].push(_lastVerified[leaseId]);
        _lastVerified[leaseId] = bytes32(0);
        ghostVerifiedNode[leaseId] = address(0);
        _pendingHash[leaseId] = bytes32(0);
        _endSegmentWithRate(leaseId, before.ratePerSecond);
    }

    /// @dev A dispute overturning an old node's Verified verdict after the lease moved on.
    function overturnOld(uint256 leaseSeed, uint256 which) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0 || _oldReports[leaseId].length == 0) return;
        bytes32 reportHash = _oldReports[leaseId][which % _oldReports[leaseId].length];
        Lease memory before = market.getLease(leaseId);
        vm.prank(court);
        try attestations.resolveDispute(leaseId, reportHash, address(this), false) {
            Lease memory afterwards = market.getLease(leaseId);
            _check(afterwards.status == before.status, "an old verdict changed the lease's status");
            _check(afterwards.nodeKey == before.nodeKey, "an old verdict moved the current node");
            _check(afterwards.deposit == before.deposit, "an old verdict touched the escrow");
        } catch {}
    }

    function withdraw(uint256 who) external {
        address account = who % 2 == 0 ? renter : operators[who % operators.length];
        vm.prank(account);
        try market.withdraw() {} catch {}
    }

    // ------------------------------------------------------------------ ghost helpers

    mapping(uint256 leaseId => bytes32) internal _lastVerified;

    function _endSegment(uint256 leaseId) private {
        Lease memory lease = market.getLease(leaseId);
        _endSegmentWithRate(leaseId, lease.ratePerSecond);
    }

    function _endSegmentWithRate(uint256 leaseId, uint256 rate) private {
        uint256 first = ghostSegmentFirstSubmit[leaseId];
        if (first != 0) ghostEndedSegmentsBound[leaseId] += (block.timestamp - first) * rate;
        ghostSegmentFirstSubmit[leaseId] = 0;
    }

    function _lease(uint256 seed) private view returns (uint256) {
        if (leaseIds.length == 0) return 0;
        return leaseIds[seed % leaseIds.length];
    }

    function _check(bool ok, string memory what) private {
        if (!ok) {
            violations += 1;
            lastViolation = what;
        }
    }
}

/// @notice The failover properties of issue 20 after every call of the handler above: tokens held
/// by the market = escrows + credits (escrow conserved across failovers), no second paid twice, bonds
/// locked exactly for active leases and backed by stake, and `isAttested` never true without a Verified
/// submission of the lease's current node.
contract FailoverInvariants_Test is Base {
    FailoverHandler internal handler;
    address[] internal nodeKeyList;
    address[] internal operatorList;

    function setUp() public override {
        super.setUp();
        for (uint256 i; i < 3; ++i) {
            string memory keyName = string(abi.encodePacked("fnode", bytes1(uint8(48 + i))));
            address key = makeAddr(keyName);
            address op = makeAddr(string(abi.encodePacked("fop", bytes1(uint8(48 + i)))));
            token.mint(op, 10_000e18);
            vm.startPrank(op);
            token.approve(address(nodes), type(uint256).max);
            nodes.register(key, nodeSpec(), "", signNodeConsent(address(nodes), makeKey(keyName), op));
            nodes.stake(key, STAKE);
            vm.stopPrank();
            nodeKeyList.push(key);
            operatorList.push(op);
        }
        address holder = stakedHolder("fholder");
        handler = new FailoverHandler(
            FailoverHandler.Wiring(
                token, nodes, attestations, market, keys, address(court), renter, verifier, holder
            ),
            measurement,
            nodeKeyList,
            operatorList
        );
        targetContract(address(handler));
    }

    /// forge-config: default.invariant.runs = 200
    /// forge-config: default.invariant.depth = 48
    function invariant_Failover() external view {
        assertEq(handler.violations(), 0, string.concat("violated: ", handler.lastViolation()));
        uint256 n = handler.leaseCount();
        uint256 escrow;
        for (uint256 i; i < n; ++i) {
            uint256 leaseId = handler.leaseIds(i);
            Lease memory lease = market.getLease(leaseId);
            escrow += uint256(lease.deposit) - lease.claimed;
            // isAttested only with a Verified submission of the current node.
            if (attestations.isAttested(leaseId, measurement)) {
                assertTrue(lease.nodeKey != address(0), "attested without a node");
                assertEq(handler.ghostVerifiedNode(leaseId), lease.nodeKey, "attested by another node's verdict");
            }
            // No second paid twice: all payments fit in the disjoint segments' windows.
            uint256 bound_ = handler.ghostEndedSegmentsBound(leaseId);
            uint256 first = handler.ghostSegmentFirstSubmit(leaseId);
            if (first != 0) bound_ += (block.timestamp - first) * lease.ratePerSecond;
            assertLe(handler.ghostPaidToNodes(leaseId) + market.claimable(leaseId), bound_, "paid twice for a second");
        }
        uint256 credits = market.credits(renter);
        for (uint256 k; k < 3; ++k) {
            credits += market.credits(operatorList[k]);
            // Bonds: locked exactly for the node's active leases, backed by active stake.
            uint256 bonds;
            for (uint256 i; i < n; ++i) {
                Lease memory lease = market.getLease(handler.leaseIds(i));
                if (lease.status == LeaseStatus.ACTIVE && lease.nodeKey == nodeKeyList[k]) bonds += lease.bond;
            }
            NodeUsage memory usage = market.nodeUsage(nodeKeyList[k]);
            assertEq(usage.bonded, bonds, "bonded != active leases' bonds");
            assertGe(nodes.getNode(nodeKeyList[k]).stake, usage.bonded, "bond not backed");
        }
        assertEq(token.balanceOf(address(market)), escrow + credits, "market balance != escrows + credits");
    }

    /// @dev The campaign reaches failovers at all (a smoke check of the handler).
    function test_HandlerReachesFailover() external {
        handler.create(10e18, true);
        handler.accept(0, 0);
        handler.submit(0);
        handler.confirm(0, true);
        handler.warp(3 hours);
        handler.failover(0, 0);
        assertEq(handler.failoversDone(), 1, "one failover");
        handler.accept(0, 1);
        handler.submit(0);
        handler.confirm(0, true);
        assertTrue(attestations.isAttested(handler.leaseIds(0), measurement), "the new node attested");
        handler.overturnOld(0, 0);
        assertEq(handler.violations(), 0, handler.lastViolation());
    }

    /// @dev The campaign reaches a rejection that moves the lease, and its reversal.
    function test_HandlerReachesRejectionMoveAndReversal() external {
        handler.create(10e18, true);
        handler.accept(0, 0);
        handler.submit(0);
        handler.confirm(0, true);
        // The handler rejects only some report hashes: challenge and answer until one is rejected.
        for (uint256 i; i < 20 && handler.rejectionMoves() == 0; ++i) {
            handler.warp(1 hours);
            handler.challenge(0);
            handler.submit(0);
            handler.confirm(0, false);
        }
        assertEq(handler.rejectionMoves(), 1, "moved by the rejection");
        assertEq(uint256(market.getLease(handler.leaseIds(0)).status), uint256(LeaseStatus.OPEN), "open again");
        handler.accept(0, 1);
        handler.overturnOldRejection(0, 0);
        assertEq(handler.overturnedRejections(), 1, "reversed");
        assertEq(handler.violations(), 0, handler.lastViolation());
    }

    /// @dev The campaign reaches a dispute that moves the lease (reason 5), and the next node's attestation.
    function test_HandlerReachesVerdictOverturnMove() external {
        handler.create(10e18, true);
        handler.accept(0, 0);
        handler.submit(0);
        handler.confirm(0, true);
        handler.warp(1 hours);
        handler.claim(0);
        handler.overturnCurrent(0);
        assertEq(handler.overturnMoves(), 1, "moved by the dispute");
        uint256 leaseId = handler.leaseIds(0);
        assertEq(uint256(market.getLease(leaseId).status), uint256(LeaseStatus.OPEN), "open again");
        handler.accept(0, 1);
        handler.submit(0);
        handler.confirm(0, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "the new node attested");
        handler.overturnCurrent(0);
        assertEq(handler.overturnMoves(), 2, "its verdict disputable, and moved again");
        assertEq(handler.violations(), 0, handler.lastViolation());
    }

    /// @dev The same through the combined path (issue 22): taken and re-taken by acceptAndSubmit.
    function test_HandlerReachesFailover_Combined() external {
        handler.create(10e18, true);
        handler.acceptAndSubmit(0, 0);
        uint256 leaseId = handler.leaseIds(0);
        assertEq(attestations.attestationNonce(leaseId), 1, "accepted and submitted");
        handler.confirm(0, true);
        handler.warp(3 hours);
        handler.failover(0, 0);
        assertEq(handler.failoversDone(), 1, "one failover");
        handler.acceptAndSubmit(0, 1);
        assertEq(attestations.attestationNonce(leaseId), 2, "the nonce kept counting");
        handler.confirm(0, true);
        assertTrue(attestations.isAttested(leaseId, measurement), "the new node attested");
        assertEq(handler.violations(), 0, handler.lastViolation());
    }
}
