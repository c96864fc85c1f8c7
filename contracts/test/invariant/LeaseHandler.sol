// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationCourt} from "../../src/AttestationCourt.sol";
import {AttestationRegistry} from "../../src/AttestationRegistry.sol";
import {LeaseMarket} from "../../src/LeaseMarket.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {TestToken} from "../../src/test-token/TestToken.sol";
import {IAttestationRegistry} from "../../src/interfaces/IAttestationRegistry.sol";
import {SnpReason, SnpReportFields} from "../../src/interfaces/ISnpVerifier.sol";
import {
    AttestationProgress,
    Lease,
    LeaseSpec,
    LeaseStatus,
    Node,
    NodeUsage,
    SubmissionInfo,
    TeeType
} from "../../src/types/DataTypes.sol";
import {Test} from "../base/Test.sol";
import {MockSnpVerifier} from "../mocks/MockSnpVerifier.sol";

/// @notice Drives random sequences of every operation, by honest parties and by adversaries:
/// an operator renting its own node (operator = renter), a verifier that also rents (it may not
/// vote on its own leases: the handler predicts that from `canVote`), nodes submitting junk nobody
/// can verify, role grants and revocations mid-vote, admin parameter changes, unbonding and
/// withdrawal mid-lease, renters closing while a verdict is pending (escrow held until
/// `finalizeClose`), nodes declining (and never re-taking) leases, and time jumps past each
/// deadline. Every action an honest party may validly take is predicted from public views
/// and then performed with try/catch: a revert of such an action is counted (per action) and
/// fails the run. The ghost model records what each party put in and got out.
/// Issue 21: every report is checkable on chain (a test double answers for each: junk is a
/// bad signature); verifiers[2] colludes (votes against the truth on every lease); disputers
/// (a stranger, an honest verifier, the colluder itself, operators) dispute latest verdicts.
contract LeaseHandler is Test {
    TestToken internal immutable token;
    NodeRegistry internal immutable nodes;
    AttestationRegistry internal immutable attestations;
    LeaseMarket internal immutable market;
    address internal immutable admin;
    bytes internal measurement;
    bytes32 internal immutable verifierRole;
    AttestationCourt internal court;
    MockSnpVerifier internal snp;
    /// @dev X25519 || Ed25519 || the signer every node submits || TLS SPKI hash.
    bytes internal guestKey;
    mapping(bytes32 reportHash => bytes) internal _reportOf;
    address[] public disputers;

    address[] public renters;
    address[] public nodeKeys;
    address[] public operators;
    address[] public verifiers;
    uint256[] public leaseIds;

    // ------------------------------------------------------------------ ghost model

    /// @dev Everything a renter put into a lease (create + top-ups).
    mapping(uint256 leaseId => uint256) public ghostDeposited;
    /// @dev What the renter got back from a lease (refund and compensation).
    mapping(uint256 leaseId => uint256) public ghostReturned;
    /// @dev The compensation part of `ghostReturned` (slashed stake paid to the renter).
    mapping(uint256 leaseId => uint256) public ghostCompensation;
    /// @dev The bond slashed on the lease (zero if none).
    mapping(uint256 leaseId => uint256) public ghostSlashedBond;
    /// @dev What operators received from a lease.
    mapping(uint256 leaseId => uint256) public ghostClaimed;
    /// @dev What the lease had earned just before its latest rejecting vote (what the renter paid
    /// for service it received; a rejection must not give any of it back).
    mapping(uint256 leaseId => uint256) public ghostEarnedBeforeRejection;
    /// @dev When the lease's current node first submitted (payment cannot start earlier).
    mapping(uint256 leaseId => uint256) public ghostFirstSubmittedAt;
    /// @dev The latest submission was junk (no evidence): honest verifiers reject it.
    mapping(uint256 leaseId => bool) internal _junk;
    /// @dev Stored status is Pending (submitted, not yet decided).
    mapping(uint256 leaseId => bool) internal _undecided;
    mapping(bytes32 voteKey => bool) internal _voted;
    /// @dev Closed by its renter while its attestation awaited the verdict: escrow held, bond locked.
    mapping(uint256 leaseId => bool) public held;
    /// @dev When each verifier last lost its role (a re-grant waits out the verification window).
    mapping(address verifier => uint256) internal _revokedAt;

    uint256 public ghostStakeIn;
    uint256 public ghostWithdrawn;
    uint256 public ghostSlashPaid;
    /// @dev Rule breaks observed inside handlers (a withdrawal before the delay, a junk call that succeeded...).
    uint256 public ghostViolations;

    /// @dev Reverts of valid honest actions, per action name, and in total.
    mapping(string action => uint256) public honestReverts;
    uint256 public totalHonestReverts;
    string public lastHonestRevert;
    mapping(string action => uint256) public honestCalls;

    constructor(
        TestToken token_,
        NodeRegistry nodes_,
        AttestationRegistry attestations_,
        LeaseMarket market_,
        address admin_,
        bytes memory measurement_,
        address[] memory renters_,
        address[] memory nodeKeys_,
        address[] memory operators_,
        address[] memory verifiers_
    ) {
        token = token_;
        nodes = nodes_;
        attestations = attestations_;
        market = market_;
        admin = admin_;
        measurement = measurement_;
        renters = renters_;
        nodeKeys = nodeKeys_;
        operators = operators_;
        verifiers = verifiers_;
        verifierRole = attestations_.VERIFIER_ROLE();
        guestKey = abi.encodePacked(keccak256("x25519"), keccak256("ed25519"), _SIGNER, keccak256("spki"));
    }

    /// @dev Wires the court and its report check (set once by the setup, after construction).
    function setCourt(AttestationCourt court_, MockSnpVerifier snp_) external {
        if (address(court) != address(0)) return;
        court = court_;
        snp = snp_;
        // Disputers that rent nothing (so the ghost model of renters stays exact): a stranger, an
        // honest verifier, the colluding verifier, and two operators that do not rent.
        disputers.push(makeAddr("disputer"));
        disputers.push(verifiers[1]);
        disputers.push(verifiers[2]);
        disputers.push(operators[1]);
        disputers.push(operators[2]);
        for (uint256 i; i < verifiers.length; ++i) {
            token.mint(verifiers[i], 50e18);
            vm.startPrank(verifiers[i]);
            token.approve(address(court_), type(uint256).max);
            court_.stake(50e18);
            vm.stopPrank();
        }
        for (uint256 i; i < disputers.length; ++i) {
            vm.prank(disputers[i]);
            token.approve(address(court_), type(uint256).max);
        }
    }

    function verifierCount() external view returns (uint256) {
        return verifiers.length;
    }

    function leaseCount() external view returns (uint256) {
        return leaseIds.length;
    }

    function renterCount() external view returns (uint256) {
        return renters.length;
    }

    function nodeCount() external view returns (uint256) {
        return nodeKeys.length;
    }

    // ------------------------------------------------------------------ time

    /// @dev Small steps or jumps just past each deadline the contracts know.
    function warp(uint256 which, uint256 secs) external {
        uint256[7] memory jumps = [
            bound(secs, 1, 600),
            market.attestationWindow() + 1,
            attestations.VERIFICATION_WINDOW() + 1,
            attestations.CHALLENGE_WINDOW() + 1,
            uint256(market.MAX_REATTEST_INTERVAL()) + 1,
            nodes.unbondingDelay() + 1,
            attestations.MIN_CHALLENGE_INTERVAL()
        ];
        // Half of the warps are small steps, the rest jump just past one deadline.
        uint256 pick = which % (2 * jumps.length);
        vm.warp(block.timestamp + jumps[pick < jumps.length ? pick : 0]);
    }

    // ------------------------------------------------------------------ renters

    function createLease(uint256 renterSeed, uint256 deposit, uint256 vcpu, uint256 interval) external {
        address renter = renters[renterSeed % renters.length];
        deposit = bound(deposit, 1, 1000e18);
        LeaseSpec memory spec = LeaseSpec({
            teeType: TeeType.SEV_SNP,
            vcpu: uint16(bound(vcpu, 1, 8)),
            memoryMiB: 1024,
            diskGiB: 10,
            minNodeStake: uint96(bound(interval, 0, 40e18)),
            reattestInterval: uint32(bound(interval, market.MIN_REATTEST_INTERVAL(), market.MAX_REATTEST_INTERVAL())),
            specHash: keccak256(abi.encode(renterSeed))
        });
        token.mint(renter, deposit);
        vm.prank(renter);
        try market.createLease(spec, 1e16, uint128(deposit), measurement) returns (uint256 leaseId) {
            leaseIds.push(leaseId);
            ghostDeposited[leaseId] = deposit;
        } catch {
            _honestRevert("createLease");
        }
        honestCalls["createLease"]++;
    }

    function topUp(uint256 leaseSeed, uint256 amount) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        amount = bound(amount, 1, 500e18);
        bool valid = lease.status == LeaseStatus.OPEN;
        if (lease.status == LeaseStatus.ACTIVE) {
            AttestationProgress memory p = attestations.progressOf(leaseId);
            valid = (uint256(p.verifiedSeconds) + p.pendingSeconds) * lease.ratePerSecond < lease.deposit;
        }
        if (!valid) return;
        token.mint(lease.renter, amount);
        vm.prank(lease.renter);
        try market.topUp(leaseId, amount) {
            ghostDeposited[leaseId] += amount;
        } catch {
            _honestRevert("topUp");
        }
        honestCalls["topUp"]++;
    }

    function closeLease(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        if (lease.status == LeaseStatus.NONE || lease.status == LeaseStatus.CLOSED) return;
        // The renter can always close (issue 18): a pending attestation's time is held in escrow.
        bool holding = lease.status == LeaseStatus.ACTIVE && _pendingNow(leaseId) && !_firstMissed(leaseId, lease);
        _closing(leaseId, lease);
        vm.prank(lease.renter);
        try market.closeLease(leaseId) {
            if (holding) held[leaseId] = true;
        } catch {
            _honestRevert("closeLease");
        }
        _closed(leaseId, lease);
        honestCalls["closeLease"]++;
    }

    /// @dev Releases the escrow of a lease closed while pending, once its window passed undecided.
    function finalizeClose(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0 || !held[leaseId]) return;
        AttestationProgress memory p = attestations.progressOf(leaseId);
        bool valid = p.decideBy == 0 || block.timestamp > p.decideBy;
        Lease memory lease = market.getLease(leaseId);
        _closing(leaseId, lease);
        try market.finalizeClose(leaseId) {
            if (!valid) ghostViolations++;
            held[leaseId] = false;
            _undecided[leaseId] = false;
        } catch {
            if (valid) _honestRevert("finalizeClose");
        }
        _released(leaseId);
        if (valid) honestCalls["finalizeClose"]++;
    }

    function challenge(uint256 leaseSeed, uint256 whoSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        address who = whoSeed % 2 == 0 ? lease.renter : verifiers[whoSeed % verifiers.length];
        bool valid = lease.status == LeaseStatus.ACTIVE
            && (who == lease.renter
                || (attestations.hasRole(verifierRole, who)
                    && who != lease.nodeKey
                    && who != nodes.operatorOf(lease.nodeKey)))
            && attestations.progressOf(leaseId).status == IAttestationRegistry.Status.Verified
            && (attestations.challengedAt(leaseId) == 0
                || block.timestamp >= attestations.challengedAt(leaseId) + attestations.MIN_CHALLENGE_INTERVAL());
        vm.prank(who);
        try market.challenge(leaseId) {
            if (!valid) ghostViolations++;
        } catch {
            if (valid) _honestRevert("challenge");
        }
        if (valid) honestCalls["challenge"]++;
    }

    function withdraw(uint256 seed) external {
        address[4] memory who = [
            renters[seed % renters.length],
            operators[seed % operators.length],
            verifiers[seed % verifiers.length],
            renters[(seed / 7) % renters.length]
        ];
        address account = who[seed % 4];
        if (market.credits(account) == 0) return;
        vm.prank(account);
        try market.withdraw() {}
        catch {
            _honestRevert("withdraw");
        }
        honestCalls["withdraw"]++;
    }

    // ------------------------------------------------------------------ nodes and operators

    function acceptLease(uint256 leaseSeed, uint256 nodeSeed) external {
        uint256 leaseId = _pick(leaseSeed, _ANY_OPEN);
        if (leaseId == 0) return;
        address nodeKey = nodeKeys[nodeSeed % nodeKeys.length];
        Lease memory lease = market.getLease(leaseId);
        if (lease.status != LeaseStatus.OPEN) return;
        // Half the time an operator's own lease goes to its own node, so that self-dealing paths
        // (served, then slashed, then claimed) are reached often.
        for (uint256 i; i < operators.length && nodeSeed % 2 == 0; ++i) {
            if (operators[i] == lease.renter) nodeKey = nodeKeys[i];
        }
        bool valid = _mayAccept(leaseId, nodeKey, lease);
        vm.prank(nodeKey);
        try market.acceptLease(leaseId) {
            if (!valid) ghostViolations++;
            ghostFirstSubmittedAt[leaseId] = 0;
        } catch {
            if (valid) _honestRevert("acceptLease");
        }
        if (valid) honestCalls["acceptLease"]++;
    }

    /// @dev A node accepts an open lease and submits its first report in one transaction (issue 22):
    /// valid exactly when the accept is, since a first report at accept time is never late.
    function acceptAndSubmit(uint256 leaseSeed, uint256 nodeSeed, uint256 reportSeed) external {
        uint256 leaseId = _pick(leaseSeed, _ANY_OPEN);
        if (leaseId == 0) return;
        address nodeKey = nodeKeys[nodeSeed % nodeKeys.length];
        Lease memory lease = market.getLease(leaseId);
        if (lease.status != LeaseStatus.OPEN) return;
        bool valid = _mayAccept(leaseId, nodeKey, lease);
        uint256 nonce = attestations.attestationNonce(leaseId);
        bool junk = reportSeed % 6 == 0;
        bytes32 reportHash = _report(leaseId, nonce, lease.renter, reportSeed, junk);
        vm.prank(nodeKey);
        try attestations.acceptAndSubmit(leaseId, nonce, reportHash, measurement, 1, bytes32(0), _SIGNER) {
            if (!valid) ghostViolations++;
            _junk[leaseId] = junk;
            _undecided[leaseId] = true;
            ghostFirstSubmittedAt[leaseId] = block.timestamp;
        } catch {
            if (valid) _honestRevert("acceptAndSubmit");
        }
        if (valid) honestCalls["acceptAndSubmit"]++;
    }

    /// @dev The lease's node attests; one in `junkEvery` submissions is junk nobody can verify.
    function submit(uint256 leaseSeed, uint256 reportSeed) external {
        uint256 leaseId = _pick(leaseSeed, _ACTIVE_DECIDED);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        if (lease.status != LeaseStatus.ACTIVE || (_undecided[leaseId] && !_expiredReattestation(leaseId))) return;
        uint256 nonce = attestations.attestationNonce(leaseId);
        // Too early a re-attestation, or a first one after attestBy (a missed first attestation that
        // a late report must not erase): both must be refused.
        bool early = _tooEarly(leaseId) || (nonce == 0 && block.timestamp > lease.attestBy);
        bytes32 reportHash = _report(leaseId, nonce, lease.renter, reportSeed, reportSeed % 6 == 0);
        vm.prank(lease.nodeKey);
        try attestations.submit(leaseId, nonce, reportHash, measurement, 1, bytes32(0), _SIGNER) {
            if (early) ghostViolations++;
            _junk[leaseId] = reportSeed % 6 == 0;
            _undecided[leaseId] = true;
            if (ghostFirstSubmittedAt[leaseId] == 0) ghostFirstSubmittedAt[leaseId] = block.timestamp;
        } catch {
            if (!early) _honestRevert("submit");
        }
        if (!early) honestCalls["submit"]++;
    }

    function claim(uint256 leaseSeed) external {
        uint256 leaseId = _pick(leaseSeed, _CLAIMABLE);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        if (lease.nodeKey == address(0) || market.claimable(leaseId) == 0) return;
        address operator = nodes.operatorOf(lease.nodeKey);
        uint256 before = token.balanceOf(operator);
        vm.prank(operator);
        try market.claim(leaseId) {
            ghostClaimed[leaseId] += token.balanceOf(operator) - before;
        } catch {
            _honestRevert("claim");
        }
        honestCalls["claim"]++;
    }

    function declineOrExit(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        if (lease.status != LeaseStatus.ACTIVE) return;
        if (_pendingNow(leaseId) && !_firstMissed(leaseId, lease)) return;
        bool declining = attestations.attestationNonce(leaseId) == 0 && block.timestamp <= lease.attestBy;
        _closing(leaseId, lease);
        vm.prank(lease.nodeKey);
        if (declining && leaseSeed % 2 == 0) {
            try market.declineLease(leaseId) {}
            catch {
                _honestRevert("declineLease");
            }
        } else {
            try market.exitLease(leaseId) {}
            catch {
                _honestRevert("exitLease");
            }
        }
        _closed(leaseId, lease);
        honestCalls["declineOrExit"]++;
    }

    function stake(uint256 nodeSeed, uint256 amount) external {
        uint256 i = nodeSeed % nodeKeys.length;
        amount = bound(amount, 1, 100e18);
        token.mint(operators[i], amount);
        vm.prank(operators[i]);
        try nodes.stake(nodeKeys[i], amount) {
            ghostStakeIn += amount;
        } catch {
            _honestRevert("stake");
        }
        honestCalls["stake"]++;
    }

    /// @dev Unbonding mid-lease: anything beyond the bonded stake must be allowed, the rest refused.
    function requestUnstake(uint256 nodeSeed, uint256 amount) external {
        uint256 i = nodeSeed % nodeKeys.length;
        Node memory node = nodes.getNode(nodeKeys[i]);
        if (node.stake == 0) return;
        uint256 bonded = market.bondedStake(nodeKeys[i]);
        // Aim at the edges as often as anywhere: all of it, exactly the unbonded part, one more.
        uint256 unbondable = node.stake - bonded;
        uint256 edge = amount % 4;
        if (edge == 0) amount = node.stake;
        else if (edge == 1 && unbondable != 0) amount = unbondable;
        else if (edge == 2 && unbondable < node.stake) amount = unbondable + 1;
        else amount = bound(amount, 1, node.stake);
        bool valid = amount + bonded <= node.stake;
        vm.prank(operators[i]);
        try nodes.requestUnstake(nodeKeys[i], amount) {
            if (!valid) ghostViolations++;
        } catch {
            if (valid) _honestRevert("requestUnstake");
        }
        if (valid) honestCalls["requestUnstake"]++;
    }

    function withdrawUnstaked(uint256 nodeSeed) external {
        uint256 i = nodeSeed % nodeKeys.length;
        Node memory node = nodes.getNode(nodeKeys[i]);
        bool valid = node.unbonding != 0 && block.timestamp >= node.unbondingEndsAt;
        vm.prank(operators[i]);
        try nodes.withdrawUnstaked(nodeKeys[i]) returns (uint256 amount) {
            // Rule: unbonded stake leaves only after the delay, and only what was unbonding.
            if (!valid || amount != node.unbonding) ghostViolations++;
            ghostWithdrawn += amount;
        } catch {
            if (valid) _honestRevert("withdrawUnstaked");
        }
        if (valid) honestCalls["withdrawUnstaked"]++;
    }

    // ------------------------------------------------------------------ verifiers

    /// @dev Honest verifiers approve genuine reports and reject junk; the colluding verifier
    /// (verifiers[0], also a renter) rejects genuine reports of its own leases.
    function confirm(uint256 leaseSeed, uint256 verifierSeed) external {
        uint256 leaseId = _pick(leaseSeed, _UNDECIDED);
        if (leaseId == 0 || !_undecided[leaseId]) return;
        Lease memory lease = market.getLease(leaseId);
        address v = verifiers[verifierSeed % verifiers.length];
        uint256 nonce = attestations.attestationNonce(leaseId);
        bytes32 voteKey = keccak256(abi.encode(leaseId, nonce, v));
        AttestationProgress memory p = attestations.progressOf(leaseId);
        // Allowed: held the role at submission, and not the lease's renter, node key or operator (so
        // the colluding verifier-renter cannot vote on its own leases at all).
        bool valid = attestations.canVote(leaseId, v) && !_voted[voteKey] && block.timestamp <= p.decideBy
            && (lease.status == LeaseStatus.ACTIVE || held[leaseId]);
        if (!valid) return;
        // verifiers[2] colludes: it votes against the truth.
        bool ok = !_junk[leaseId] != (v == verifiers[2]);
        bytes32 reportHash = attestations.attestationOf(leaseId).reportHash;
        _closing(leaseId, lease);
        if (!ok && !held[leaseId]) ghostEarnedBeforeRejection[leaseId] = market.earned(leaseId);
        vm.prank(v);
        try attestations.confirm(leaseId, reportHash, ok) {
            _voted[voteKey] = true;
            if (attestations.progressOf(leaseId).status != IAttestationRegistry.Status.Pending) {
                _undecided[leaseId] = false;
                if (held[leaseId]) {
                    held[leaseId] = false;
                    _released(leaseId);
                }
            }
        } catch {
            _honestRevert("confirm");
        }
        if (!ok) _closed(leaseId, lease);
        honestCalls["confirm"]++;
    }

    // ------------------------------------------------------------------ disputers

    /// @dev Anyone disputes the latest decided verdict of a lease within its window (valid: once).
    function dispute(uint256 leaseSeed, uint256 whoSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0 || attestations.attestationNonce(leaseId) == 0) return;
        bytes32 reportHash = attestations.attestationOf(leaseId).reportHash;
        SubmissionInfo memory sub = attestations.submissionOf(leaseId, reportHash);
        bool decided =
            sub.verdict == IAttestationRegistry.Status.Verified || sub.verdict == IAttestationRegistry.Status.Rejected;
        bool valid = sub.number != 0 && decided && !sub.disputed && !sub.confirmedOnChain
            && block.timestamp <= sub.disputableUntil;
        address who = disputers[whoSeed % disputers.length];
        uint256 bond = attestations.disputeTerms().bond;
        token.mint(who, bond);
        Lease memory lease = market.getLease(leaseId);
        _closing(leaseId, lease);
        uint256 courtBefore = token.balanceOf(address(court));
        uint256 whoBefore = token.balanceOf(who);
        bytes[] memory certs = new bytes[](1);
        certs[0] = abi.encode(keccak256("the chip's cached VCEK"));
        vm.prank(who);
        try court.dispute(leaseId, reportHash, _reportOf[reportHash], certs, guestKey) returns (bool overturned) {
            if (!valid) ghostViolations++;
            // Only a verdict against the truth is overturned.
            if (overturned != ((sub.verdict == IAttestationRegistry.Status.Verified) == _junkReport[reportHash])) {
                ghostViolations++;
            }
            // What the court paid out besides the disputer's gain went to the operator.
            uint256 courtOut = courtBefore + bond - token.balanceOf(address(court));
            uint256 toOperator = courtOut - (token.balanceOf(who) + bond - whoBefore);
            _disputed(
                leaseId, lease, overturned && sub.verdict == IAttestationRegistry.Status.Verified, sub, toOperator
            );
        } catch {
            if (valid) _honestRevert("dispute");
        }
        if (valid) honestCalls["dispute"]++;
    }

    /// @dev Burden of proof: a dispute of the latest Verified verdict whose check the disputer's inputs
    /// leave undecided opens a challenge (bond held); then either the node defends a genuine report in
    /// time (the verdict stands), or nobody does and, after the deadline, anyone resolves it (reversed,
    /// whatever the report: the defender carried the burden).
    function challenge(uint256 leaseSeed, uint256 whoSeed, bool defend) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0 || attestations.attestationNonce(leaseId) == 0) return;
        bytes32 reportHash = attestations.attestationOf(leaseId).reportHash;
        SubmissionInfo memory sub = attestations.submissionOf(leaseId, reportHash);
        if (
            sub.number == 0 || sub.verdict != IAttestationRegistry.Status.Verified || sub.disputed
                || sub.confirmedOnChain || block.timestamp > sub.disputableUntil
        ) return;
        address who = disputers[whoSeed % disputers.length];
        token.mint(who, attestations.disputeTerms().bond);
        bytes memory report = _reportOf[reportHash];
        bool junk = _junkReport[reportHash];
        (,, SnpReportFields memory fields) = snp.checkReport(report, new bytes[](0));
        // The disputer's certificates decide nothing.
        snp.setAnswer(report, false, uint8(SnpReason.CertChain), fields);
        bytes[] memory certs = new bytes[](1);
        certs[0] = abi.encode(keccak256("a certificate nobody cached"));
        vm.prank(who);
        try court.dispute(leaseId, reportHash, report, certs, guestKey) returns (bool overturned) {
            if (overturned || court.challengeOf(leaseId, reportHash).deadline == 0) ghostViolations++;
        } catch {
            _honestRevert("challenge");
            snp.setAnswer(report, !junk, junk ? uint8(SnpReason.BadSignature) : 0, fields);
            return;
        }
        honestCalls["challenge"]++;
        // Every later call sees the report's true answer again.
        snp.setAnswer(report, !junk, junk ? uint8(SnpReason.BadSignature) : 0, fields);
        if (defend && !junk) {
            try court.defend(leaseId, reportHash, report, certs, guestKey) {}
            catch {
                _honestRevert("defend");
            }
            if (court.challengeOf(leaseId, reportHash).deadline != 0) ghostViolations++;
            return;
        }
        vm.warp(court.challengeOf(leaseId, reportHash).deadline + 1);
        Lease memory lease = market.getLease(leaseId);
        _closing(leaseId, lease);
        try court.resolve(leaseId, reportHash) {
            _disputed(leaseId, lease, true, sub, 0);
        } catch {
            _honestRevert("resolve");
        }
    }

    // ------------------------------------------------------------------ anyone

    function settle(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        if (lease.status != LeaseStatus.ACTIVE || _pendingNow(leaseId)) return;
        if (market.earned(leaseId) < lease.deposit) return;
        _closing(leaseId, lease);
        try market.settle(leaseId) {}
        catch {
            _honestRevert("settle");
        }
        _closed(leaseId, lease);
        honestCalls["settle"]++;
    }

    function reportMissedAttestation(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        Lease memory lease = market.getLease(leaseId);
        bool valid = lease.status == LeaseStatus.ACTIVE && _firstMissed(leaseId, lease);
        if (valid) _closing(leaseId, lease);
        try market.reportMissedAttestation(leaseId) {
            if (!valid) ghostViolations++;
        } catch {
            if (valid) _honestRevert("reportMissedAttestation");
        }
        if (valid) {
            _closed(leaseId, lease);
            honestCalls["reportMissedAttestation"]++;
        }
    }

    /// @dev Calls that must fail whoever makes them: a stranger submitting, voting, slashing,
    /// calling the market's registry hook, or a node submitting a stale nonce.
    function junkCall(uint256 which, uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        address stranger = address(uint160(0xBAD0 + which % 7));
        bool succeeded;
        which %= 5;
        if (which == 0) {
            vm.prank(stranger);
            try attestations.submit(leaseId, 0, keccak256("junk"), measurement, 1, bytes32(0), _SIGNER) {
                succeeded = true;
            } catch {}
        } else if (which == 1) {
            vm.prank(stranger);
            try attestations.confirm(leaseId, keccak256("junk"), false) {
                succeeded = true;
            } catch {}
        } else if (which == 2) {
            address target = nodeKeys[leaseSeed % nodeKeys.length];
            vm.prank(stranger);
            try nodes.slash(target, 1e18, 1e18) {
                succeeded = true;
            } catch {}
        } else if (which == 3) {
            vm.prank(stranger);
            try market.onAttestationRejected(leaseId) {
                succeeded = true;
            } catch {}
        } else {
            address nodeKey = market.getLease(leaseId).nodeKey;
            uint256 nonce = attestations.attestationNonce(leaseId);
            vm.prank(nodeKey);
            try attestations.submit(leaseId, nonce + 1, keccak256("stale"), measurement, 1, bytes32(0), _SIGNER) {
                succeeded = true;
            } catch {}
        }
        if (succeeded) ghostViolations++;
    }

    // ------------------------------------------------------------------ admin

    function adminAction(uint256 which, uint256 value) external {
        which %= 7;
        string memory action;
        vm.startPrank(admin);
        if (which == 0) {
            action = "setSlashBps";
            try nodes.setSlashBps(bound(value, 0, nodes.MAX_SLASH_BPS())) {}
            catch {
                _honestRevert(action);
            }
        } else if (which == 1) {
            action = "setMinStake";
            try nodes.setMinStake(bound(value, 0, 50e18)) {}
            catch {
                _honestRevert(action);
            }
        } else if (which == 2) {
            action = "setAttestationWindow";
            try market.setAttestationWindow(bound(value, 1 minutes, 1 days)) {}
            catch {
                _honestRevert(action);
            }
        } else if (which == 3) {
            action = "setUnbondingDelay";
            try nodes.setUnbondingDelay(bound(value, market.minUnbondingDelay(), nodes.MAX_UNBONDING_DELAY())) {}
            catch {
                _honestRevert(action);
            }
        } else if (which == 4) {
            action = "setQuorum";
            try attestations.setQuorum(bound(value, 1, 3)) {}
            catch {
                _honestRevert(action);
            }
        } else if (which == 5) {
            action = "grantRole";
            address v = verifiers[value % verifiers.length];
            // A revoked verifier is granted again only after the verification window.
            bool valid = attestations.hasRole(verifierRole, v) || _revokedAt[v] == 0
                || block.timestamp > _revokedAt[v] + attestations.VERIFICATION_WINDOW();
            try attestations.grantRole(verifierRole, v) {
                if (!valid) ghostViolations++;
            } catch {
                if (valid) _honestRevert(action);
            }
        } else {
            action = "revokeRole";
            address v = verifiers[value % verifiers.length];
            bool had = attestations.hasRole(verifierRole, v);
            try attestations.revokeRole(verifierRole, v) {
                if (had) _revokedAt[v] = block.timestamp;
            } catch {
                _honestRevert(action);
            }
        }
        vm.stopPrank();
        honestCalls[action]++;
    }

    // ------------------------------------------------------------------ private

    function _lease(uint256 seed) private view returns (uint256) {
        if (leaseIds.length == 0) return 0;
        return leaseIds[seed % leaseIds.length];
    }

    address private constant _SIGNER = address(0x516E4E52);

    uint8 private constant _ANY_OPEN = 1;
    uint8 private constant _ACTIVE_DECIDED = 2;
    uint8 private constant _UNDECIDED = 3;
    uint8 private constant _CLAIMABLE = 4;

    /// @dev The first lease from `seed` on (cyclically) in the state an action needs, so that
    /// sequences reach deep states instead of mostly skipping; zero if none.
    function _pick(uint256 seed, uint8 kind) private view returns (uint256) {
        uint256 n = leaseIds.length;
        for (uint256 k; k < n; ++k) {
            uint256 leaseId = leaseIds[(seed % n + k) % n];
            LeaseStatus status = market.getLease(leaseId).status;
            if (kind == _ANY_OPEN && status == LeaseStatus.OPEN) return leaseId;
            if (
                kind == _ACTIVE_DECIDED && status == LeaseStatus.ACTIVE
                    && (!_undecided[leaseId] || _expiredReattestation(leaseId))
            ) return leaseId;
            if (kind == _UNDECIDED && _undecided[leaseId]) return leaseId;
            if (kind == _CLAIMABLE && status != LeaseStatus.OPEN && market.claimable(leaseId) != 0) return leaseId;
        }
        return 0;
    }

    /// @dev The latest attestation awaits the verifiers within its window.
    function _pendingNow(uint256 leaseId) private view returns (bool) {
        return attestations.progressOf(leaseId).status == IAttestationRegistry.Status.Pending;
    }

    /// @dev A re-attestation left undecided past the verification window: the node may submit again.
    function _expiredReattestation(uint256 leaseId) private view returns (bool) {
        AttestationProgress memory p = attestations.progressOf(leaseId);
        // A first attestation left undecided may be followed by another only when excused.
        return _undecided[leaseId] && (p.nonce > 1 || p.excused) && block.timestamp > p.decideBy;
    }

    /// @dev The latest attestation is Verified, unchallenged since its submission, and less than
    /// half its interval old: a re-attestation now must be refused.
    function _tooEarly(uint256 leaseId) private view returns (bool) {
        if (attestations.progressOf(leaseId).status != IAttestationRegistry.Status.Verified) return false;
        IAttestationRegistry.Attestation memory a = attestations.attestationOf(leaseId);
        if (attestations.challengedAt(leaseId) > a.submittedAt) return false;
        return block.timestamp < a.submittedAt + (a.expiresAt - a.submittedAt) / 2;
    }

    function _firstMissed(uint256 leaseId, Lease memory lease) private view returns (bool) {
        AttestationProgress memory p = attestations.progressOf(leaseId);
        if (p.nonce == 0) return block.timestamp > lease.attestBy;
        return p.nonce == 1 && p.decideBy != 0 && block.timestamp > p.decideBy && !p.excused;
    }

    // Balances before a call that may close a lease, to attribute what the renter got back.
    uint256 private _renterBalance;
    uint256 private _renterCredit;
    uint256 private _registryBalance;
    uint256 private _burnedBefore;

    function _closing(uint256, Lease memory lease) private {
        _renterBalance = token.balanceOf(lease.renter);
        _renterCredit = market.credits(lease.renter);
        _registryBalance = token.balanceOf(address(nodes));
        _burnedBefore = nodes.burnedStake();
    }

    function _closed(uint256 leaseId, Lease memory before) private {
        Lease memory lease = market.getLease(leaseId);
        if (lease.status == LeaseStatus.OPEN) {
            // Declined: the lease went back to the market, nothing moved.
            if (_undecided[leaseId]) ghostViolations++;
            return;
        }
        if (lease.status != LeaseStatus.CLOSED || before.status == LeaseStatus.CLOSED) return;
        // A lease closed while pending keeps its attestation open to the verifiers.
        if (!held[leaseId]) _undecided[leaseId] = false;
        uint256 returned = token.balanceOf(lease.renter) + market.credits(lease.renter) - _renterBalance - _renterCredit;
        uint256 paid = _registryBalance - token.balanceOf(address(nodes));
        uint256 burned = nodes.burnedStake() - _burnedBefore;
        ghostReturned[leaseId] += returned;
        ghostCompensation[leaseId] += paid;
        ghostSlashPaid += paid;
        ghostSlashedBond[leaseId] += paid + burned;
    }

    /// @dev What a held lease's release moved: the renter's refund, and a slashed bond.
    function _released(uint256 leaseId) private {
        Lease memory lease = market.getLease(leaseId);
        uint256 returned = token.balanceOf(lease.renter) + market.credits(lease.renter) - _renterBalance - _renterCredit;
        uint256 paid = _registryBalance - token.balanceOf(address(nodes));
        uint256 burned = nodes.burnedStake() - _burnedBefore;
        ghostReturned[leaseId] += returned;
        ghostCompensation[leaseId] += paid;
        ghostSlashPaid += paid;
        ghostSlashedBond[leaseId] += paid + burned;
    }

    mapping(bytes32 reportHash => bool) internal _junkReport;

    /// @dev 1184 report bytes for submission `nonce` of `leaseId`, with the EVM check's answer: a
    /// genuine report bound to the lease, or junk (a bad signature on a chip-bound VCEK report).
    /// @dev Whether `nodeKey` may accept the open lease now (the market's checks, predicted).
    function _mayAccept(uint256 leaseId, address nodeKey, Lease memory lease) private view returns (bool) {
        (Node memory node, uint256 minStake, uint256 slashBps) = nodes.nodeTerms(nodeKey);
        NodeUsage memory usage = market.nodeUsage(nodeKey);
        uint256 required = minStake > lease.minNodeStake ? minStake : lease.minNodeStake;
        uint256 bond = required * slashBps / 10_000;
        return !market.declinedBy(leaseId, nodeKey) && node.stake >= required
            && node.stake >= uint256(usage.bonded) + bond && uint256(usage.vcpu) + lease.vcpu <= node.vcpu
            && uint256(usage.memoryMiB) + lease.memoryMiB <= node.memoryMiB
            && uint256(usage.diskGiB) + lease.diskGiB <= node.diskGiB
            && uint256(node.pricePerSecondPerUnit) * lease.vcpu <= lease.maxPricePerSecond;
    }

    function _report(uint256 leaseId, uint256 nonce, address renter, uint256 seed, bool junk)
        private
        returns (bytes32 reportHash)
    {
        bytes memory report = new bytes(1184);
        bytes32 head = keccak256(abi.encode(seed, nonce, leaseId));
        assembly ("memory-safe") {
            mstore(add(report, 32), head)
        }
        report[0x1A0] = 0x01; // CHIP_ID not masked; SIGNING_KEY (0x48) is 0: VCEK
        reportHash = keccak256(report);
        SnpReportFields memory fields;
        fields.measurement = measurement;
        fields.reportData0 =
            keccak256(abi.encode("cvm.attest.v1", block.chainid, address(attestations), leaseId, nonce));
        fields.reportData1 = sha256(guestKey);
        fields.hostData = keccak256(abi.encode("cvm.host.v1", block.chainid, address(attestations), leaseId, renter));
        fields.reportHash = reportHash;
        snp.setAnswer(report, !junk, junk ? uint8(SnpReason.BadSignature) : 0, fields);
        _reportOf[reportHash] = report;
        _junkReport[reportHash] = junk;
    }

    /// @dev What a dispute moved: the renter's refund (or, for an overturned rejection, what it paid
    /// back), a slashed or restored bond. An operator renting its own node is paid the node's time by
    /// the court (verifier money, not the lease's), which is not the renter's return.
    function _disputed(
        uint256 leaseId,
        Lease memory before,
        bool falseVerified,
        SubmissionInfo memory sub,
        uint256 toOperator
    ) private {
        Lease memory lease = market.getLease(leaseId);
        uint256 nowHeld = token.balanceOf(lease.renter) + market.credits(lease.renter);
        if (nodes.operatorOf(lease.nodeKey) == lease.renter) nowHeld -= toOperator;
        uint256 wasHeld = _renterBalance + _renterCredit;
        if (nowHeld >= wasHeld) ghostReturned[leaseId] += nowHeld - wasHeld;
        else ghostReturned[leaseId] -= wasHeld - nowHeld;
        uint256 paid = _registryBalance - token.balanceOf(address(nodes));
        ghostCompensation[leaseId] += paid;
        ghostSlashPaid += paid;
        uint256 burnedNow = nodes.burnedStake();
        if (burnedNow >= _burnedBefore) ghostSlashedBond[leaseId] += paid + burnedNow - _burnedBefore;
        else ghostSlashedBond[leaseId] = ghostSlashedBond[leaseId] + paid - (_burnedBefore - burnedNow);
        if (falseVerified) {
            // Earned stays what was verified before the false submission: that is what the renter paid for.
            uint256 keep = uint256(sub.bankedBefore) * before.ratePerSecond;
            uint256 deposit = before.status == LeaseStatus.CLOSED ? before.deposit : ghostDeposited[leaseId];
            ghostEarnedBeforeRejection[leaseId] = keep < deposit ? keep : deposit;
            _undecided[leaseId] = false;
            held[leaseId] = false;
        }
        if (lease.status != before.status && lease.status == LeaseStatus.CLOSED) _undecided[leaseId] = false;
    }

    function _honestRevert(string memory action) private {
        honestReverts[action]++;
        totalHonestReverts++;
        lastHonestRevert = action;
    }
}
