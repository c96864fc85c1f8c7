// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {KeyService} from "../../../src/KeyService.sol";
import {IAttestationRegistry} from "../../../src/interfaces/IAttestationRegistry.sol";
import {IKeyService} from "../../../src/interfaces/IKeyService.sol";
import {ILeaseMarket} from "../../../src/interfaces/ILeaseMarket.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {HolderInfo, KeyPolicy} from "../../../src/types/DataTypes.sol";
import {Base} from "../../Base.t.sol";
import {FeeOnTransferToken} from "../../mocks/FeeOnTransferToken.sol";

contract KeyService_Holders_Test is Base {
    function test_RevertWhen_ConstructedWithZeroAddressOrBadTerms() external {
        vm.expectRevert(Errors.KeyService_ZeroAddress.selector);
        new KeyService(IERC20(address(0)), market, attestations, 1, 1);
        vm.expectRevert(Errors.KeyService_ZeroAddress.selector);
        new KeyService(token, ILeaseMarket(address(0)), attestations, 1, 1);
        vm.expectRevert(Errors.KeyService_ZeroAddress.selector);
        new KeyService(token, market, IAttestationRegistry(address(0)), 1, 1);
        vm.expectRevert(Errors.KeyService_InvalidTerms.selector);
        new KeyService(token, market, attestations, 0, 1);
        vm.expectRevert(Errors.KeyService_InvalidTerms.selector);
        new KeyService(token, market, attestations, uint256(type(uint96).max) + 1, 1);
        vm.expectRevert(Errors.KeyService_InvalidTerms.selector);
        new KeyService(token, market, attestations, 1, 366 days);
    }

    function test_Constants() external view {
        assertEq(keys.MEASUREMENT_LENGTH(), 48, "measurement length");
        assertEq(keys.MAX_MEASUREMENTS(), 8, "measurements");
        assertEq(keys.MAX_POLICY_HOLDERS(), 16, "policy holders");
        assertEq(keys.MAX_HOLDERS(), 64, "holders");
        assertEq(address(keys.stakeToken()), address(token), "token");
        assertEq(address(keys.leaseMarket()), address(market), "market");
        assertEq(address(keys.attestationRegistry()), address(attestations), "registry");
        assertEq(keys.minHolderStake(), MIN_HOLDER_STAKE, "min stake");
        assertEq(keys.unbondingDelay(), HOLDER_UNBONDING, "unbonding");
    }

    function test_RegisterAndStake() external {
        address holder = makeAddr("h");
        token.mint(holder, 100e18);
        vm.startPrank(holder);
        token.approve(address(keys), type(uint256).max);
        vm.expectRevert(Errors.KeyService_ZeroAmount.selector);
        keys.stakeHolder(0);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.KeyService_StakeTooLow.selector, holder, 0, MIN_HOLDER_STAKE)
        );
        keys.registerHolder(bytes32(uint256(1)));
        vm.expectEmit(address(keys));
        emit IKeyService.HolderStaked(holder, MIN_HOLDER_STAKE, MIN_HOLDER_STAKE);
        keys.stakeHolder(MIN_HOLDER_STAKE);
        vm.expectRevert(Errors.KeyService_ZeroKey.selector);
        keys.registerHolder(bytes32(0));
        vm.expectEmit(address(keys));
        emit IKeyService.HolderRegistered(holder, bytes32(uint256(7)));
        keys.registerHolder(bytes32(uint256(7)));
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_AlreadyRegistered.selector, holder));
        keys.registerHolder(bytes32(uint256(8)));
        vm.stopPrank();
        HolderInfo memory info = keys.holderOf(holder);
        assertEq(info.key, bytes32(uint256(7)), "key");
        assertEq(info.stake, MIN_HOLDER_STAKE, "stake");
        assertTrue(info.registered, "registered");
        assertTrue(keys.isActiveHolder(holder), "active");
        address[] memory active = keys.activeHolders();
        assertEq(active.length, 1, "one active");
        assertEq(active[0], holder, "the holder");
    }

    function test_UnstakeMakesInactive_WithdrawAfterDelay_Deregister() external {
        address holder = stakedHolder("h");
        vm.startPrank(holder);
        vm.expectRevert(Errors.KeyService_ZeroAmount.selector);
        keys.requestUnstakeHolder(0);
        vm.expectRevert(
            abi.encodeWithSelector(
                Errors.KeyService_UnstakeExceedsStake.selector, holder, MIN_HOLDER_STAKE + 1, MIN_HOLDER_STAKE
            )
        );
        keys.requestUnstakeHolder(MIN_HOLDER_STAKE + 1);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NothingUnbonding.selector, holder));
        keys.withdrawHolderStake();
        vm.expectEmit(address(keys));
        emit IKeyService.HolderUnstakeRequested(holder, 1, block.timestamp + HOLDER_UNBONDING);
        keys.requestUnstakeHolder(1);
        vm.stopPrank();
        assertFalse(keys.isActiveHolder(holder), "below the minimum: inactive");
        assertEq(keys.activeHolders().length, 0, "not listed as active");
        vm.prank(holder);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_StakeRemaining.selector, holder));
        keys.deregisterHolder();
        vm.prank(holder);
        vm.expectRevert(
            abi.encodeWithSelector(Errors.KeyService_StakeLocked.selector, holder, block.timestamp + HOLDER_UNBONDING)
        );
        keys.withdrawHolderStake();
        vm.warp(block.timestamp + HOLDER_UNBONDING);
        vm.startPrank(holder);
        vm.expectEmit(address(keys));
        emit IKeyService.HolderUnstaked(holder, 1);
        assertEq(keys.withdrawHolderStake(), 1, "withdrawn");
        assertEq(token.balanceOf(holder), 1, "tokens back");
        keys.requestUnstakeHolder(MIN_HOLDER_STAKE - 1);
        vm.warp(block.timestamp + HOLDER_UNBONDING);
        keys.withdrawHolderStake();
        vm.expectEmit(address(keys));
        emit IKeyService.HolderDeregistered(holder);
        keys.deregisterHolder();
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NotRegistered.selector, holder));
        keys.deregisterHolder();
        vm.stopPrank();
        assertFalse(keys.holderOf(holder).registered, "gone");
    }

    function test_DeregisterMovesTheLastHolder() external {
        address a = stakedHolder("a");
        address b = stakedHolder("b");
        address c = stakedHolder("c");
        vm.startPrank(a);
        keys.requestUnstakeHolder(MIN_HOLDER_STAKE);
        vm.warp(block.timestamp + HOLDER_UNBONDING);
        keys.withdrawHolderStake();
        keys.deregisterHolder();
        vm.stopPrank();
        address[] memory active = keys.activeHolders();
        assertEq(active.length, 2, "two left");
        assertEq(active[0], c, "the last moved into the gap");
        assertEq(active[1], b, "b stays");
        // The freed place can be taken again.
        vm.startPrank(a);
        token.approve(address(keys), type(uint256).max);
        keys.stakeHolder(MIN_HOLDER_STAKE);
        keys.registerHolder(bytes32(uint256(9)));
        vm.stopPrank();
        assertEq(keys.activeHolders().length, 3, "a back");
    }

    function test_RevertWhen_TooManyHolders() external {
        for (uint256 i; i < 64; ++i) {
            stakedHolder(string(abi.encodePacked("holder-", vm_toString(i))));
        }
        address extra = makeAddr("extra");
        token.mint(extra, MIN_HOLDER_STAKE);
        vm.startPrank(extra);
        token.approve(address(keys), type(uint256).max);
        keys.stakeHolder(MIN_HOLDER_STAKE);
        vm.expectRevert(Errors.KeyService_TooManyHolders.selector);
        keys.registerHolder(bytes32(uint256(1)));
        vm.stopPrank();
    }

    /// @dev Attack: 64 accounts stake, register, unstake and withdraw: without eviction they hold every
    /// place for good at no capital cost. A new staked holder takes the place of one below the minimum.
    function test_RegisterWhenFull_EvictsAHolderBelowTheMinimum() external {
        address[] memory squatters = new address[](64);
        for (uint256 i; i < 64; ++i) {
            squatters[i] = stakedHolder(string(abi.encodePacked("squatter-", vm_toString(i))));
            vm.prank(squatters[i]);
            keys.requestUnstakeHolder(MIN_HOLDER_STAKE);
        }
        vm.warp(block.timestamp + HOLDER_UNBONDING);
        for (uint256 i; i < 64; ++i) {
            vm.prank(squatters[i]);
            keys.withdrawHolderStake();
        }
        assertEq(keys.activeHolders().length, 0, "no active holder left");
        address fresh = stakedHolderIfRoom("fresh");
        assertTrue(keys.isActiveHolder(fresh), "a staked holder finds a place");
        assertFalse(keys.holderOf(squatters[0]).registered, "the first inactive holder was evicted");
        assertEq(keys.activeHolders().length, 1, "one active");
    }

    function stakedHolderIfRoom(string memory name) internal returns (address holder) {
        holder = makeAddr(name);
        token.mint(holder, MIN_HOLDER_STAKE);
        vm.startPrank(holder);
        token.approve(address(keys), type(uint256).max);
        keys.stakeHolder(MIN_HOLDER_STAKE);
        vm.expectEmit(address(keys));
        emit IKeyService.HolderDeregistered(makeAddr("squatter-00"));
        keys.registerHolder(bytes32(uint256(7)));
        vm.stopPrank();
    }

    function test_RevertWhen_FeeOnTransferToken() external {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        KeyService feeKeys = new KeyService(IERC20(address(fee)), market, attestations, 1, 0);
        fee.mint(address(this), 100);
        fee.approve(address(feeKeys), 100);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_TransferAmountMismatch.selector, 100, 99));
        feeKeys.stakeHolder(100);
    }

    function vm_toString(uint256 value) private pure returns (string memory) {
        bytes memory digits = new bytes(2);
        digits[0] = bytes1(uint8(48 + value / 10));
        digits[1] = bytes1(uint8(48 + value % 10));
        return string(digits);
    }
}

contract KeyService_Policy_Test is Base {
    function test_SetKeyPolicy_ByRenter_OpenLease() external {
        uint256 leaseId = createLease();
        KeyPolicy memory policy = keyPolicy(true);
        vm.expectEmit(address(keys));
        emit IKeyService.KeyPolicySet(leaseId, 1, policy.manifestHash, true);
        vm.prank(renter);
        keys.setKeyPolicy(leaseId, policy);
        assertTrue(keys.hasKeyPolicy(leaseId), "has policy");
        assertTrue(keys.failoverAllowed(leaseId), "failover");
        KeyPolicy memory stored = keys.keyPolicyOf(leaseId);
        assertEq(stored.holders.length, 3, "holders");
        assertEq(stored.holders[1], policy.holders[1], "holder order kept");
        assertEq(stored.measurements[0], measurement, "measurement");
        assertEq(uint256(stored.threshold), 2, "threshold");
        assertEq(uint256(stored.keyVersion), 1, "version");
        assertEq(stored.manifestHash, policy.manifestHash, "manifest");
    }

    function test_RevertWhen_NotRenter_OrLeaseMissingOrClosed() external {
        uint256 leaseId = createLease();
        KeyPolicy memory policy = keyPolicy(true);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NotRenter.selector, leaseId, operator, renter));
        vm.prank(operator);
        keys.setKeyPolicy(leaseId, policy);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_LeaseNotOpenOrActive.selector, 99));
        vm.prank(renter);
        keys.setKeyPolicy(99, policy);
        vm.prank(renter);
        market.closeLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_LeaseNotOpenOrActive.selector, leaseId));
        vm.prank(renter);
        keys.setKeyPolicy(leaseId, policy);
    }

    function test_RevertWhen_PolicyInvalid() external {
        uint256 leaseId = createLease();
        KeyPolicy memory policy = keyPolicy(true);
        vm.startPrank(renter);

        bytes[] memory good = policy.measurements;
        policy.measurements = new bytes[](0);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidMeasurements.selector, leaseId));
        keys.setKeyPolicy(leaseId, policy);
        policy.measurements = new bytes[](9);
        for (uint256 i; i < 9; ++i) {
            policy.measurements[i] = measurement;
        }
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidMeasurements.selector, leaseId));
        keys.setKeyPolicy(leaseId, policy);
        policy.measurements = new bytes[](1);
        policy.measurements[0] = hex"aabb";
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidMeasurements.selector, leaseId));
        keys.setKeyPolicy(leaseId, policy);
        policy.measurements = good;

        policy.threshold = 0;
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidThreshold.selector, leaseId, 0, 3));
        keys.setKeyPolicy(leaseId, policy);
        policy.threshold = 4;
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidThreshold.selector, leaseId, 4, 3));
        keys.setKeyPolicy(leaseId, policy);
        policy.threshold = 2;

        address[] memory holders = policy.holders;
        policy.holders = new address[](0);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidThreshold.selector, leaseId, 2, 0));
        keys.setKeyPolicy(leaseId, policy);
        policy.holders = new address[](17);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidThreshold.selector, leaseId, 2, 17));
        keys.setKeyPolicy(leaseId, policy);
        policy.holders = new address[](3);
        policy.holders[0] = holders[0];
        policy.holders[1] = holders[1];
        policy.holders[2] = holders[0];
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_DuplicateHolder.selector, leaseId, holders[0]));
        keys.setKeyPolicy(leaseId, policy);
        policy.holders = holders;

        policy.manifestHash = bytes32(0);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_ZeroManifestHash.selector, leaseId));
        keys.setKeyPolicy(leaseId, policy);
        vm.stopPrank();
    }

    /// @dev Attack: a policy naming holders that are not staked (or not registered) is refused, so a
    /// renter's client cannot be tricked into splitting the key among sybils the chain never priced.
    function test_RevertWhen_HolderNotStakedOrNotRegistered() external {
        uint256 leaseId = createLease();
        KeyPolicy memory policy = keyPolicy(true);
        address unregistered = makeAddr("unregistered");
        policy.holders[2] = unregistered;
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_HolderNotActive.selector, leaseId, unregistered));
        vm.prank(renter);
        keys.setKeyPolicy(leaseId, policy);
        // Registered, then unstaked below the minimum: no longer nameable.
        address leaving = policy.holders[1];
        vm.prank(leaving);
        keys.requestUnstakeHolder(1);
        policy.holders[2] = stakedHolder("holder-4");
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_HolderNotActive.selector, leaseId, leaving));
        vm.prank(renter);
        keys.setKeyPolicy(leaseId, policy);
    }

    function test_KeyVersionRules() external {
        uint256 leaseId = createLease();
        KeyPolicy memory policy = setPolicy(leaseId, true);
        vm.startPrank(renter);
        // Same root key, failover flag changed: the version may stay.
        policy.failover = false;
        keys.setKeyPolicy(leaseId, policy);
        // A new manifest (rekey) at the same version: refused; at a higher one: accepted.
        policy.manifestHash = keccak256("manifest-2");
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_KeyVersionNotIncreased.selector, leaseId, 1, 1));
        keys.setKeyPolicy(leaseId, policy);
        policy.keyVersion = 2;
        keys.setKeyPolicy(leaseId, policy);
        // Other holders at the same version: refused.
        address swapped = policy.holders[0];
        policy.holders[0] = policy.holders[1];
        policy.holders[1] = swapped;
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_KeyVersionNotIncreased.selector, leaseId, 2, 2));
        keys.setKeyPolicy(leaseId, policy);
        // Never down.
        policy.holders[1] = policy.holders[0];
        policy.holders[0] = swapped;
        policy.keyVersion = 1;
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_KeyVersionNotIncreased.selector, leaseId, 1, 2));
        keys.setKeyPolicy(leaseId, policy);
        vm.stopPrank();
    }

    function test_UpdateMeasurements_SetFailover() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NoPolicy.selector, leaseId));
        vm.prank(renter);
        keys.setFailover(leaseId, true);
        bytes[] memory next = new bytes[](2);
        next[0] = measurement;
        next[1] = abi.encodePacked(bytes32(uint256(1)), bytes16(uint128(2)));
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NoPolicy.selector, leaseId));
        vm.prank(renter);
        keys.updateMeasurements(leaseId, next);
        setPolicy(leaseId, false);

        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NotRenter.selector, leaseId, nodeKey, renter));
        vm.prank(nodeKey);
        keys.setFailover(leaseId, true);
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_NotRenter.selector, leaseId, nodeKey, renter));
        vm.prank(nodeKey);
        keys.updateMeasurements(leaseId, next);

        vm.expectEmit(address(keys));
        emit IKeyService.KeyFailoverSet(leaseId, true);
        vm.prank(renter);
        keys.setFailover(leaseId, true);
        assertTrue(keys.failoverAllowed(leaseId), "allowed");

        vm.expectEmit(address(keys));
        emit IKeyService.KeyMeasurementsSet(leaseId);
        vm.prank(renter);
        keys.updateMeasurements(leaseId, next);
        assertEq(keys.keyPolicyOf(leaseId).measurements.length, 2, "two measurements");
        assertEq(keys.keyPolicyOf(leaseId).measurements[1], next[1], "the new one");
        vm.expectRevert(abi.encodeWithSelector(Errors.KeyService_InvalidMeasurements.selector, leaseId));
        vm.prank(renter);
        keys.updateMeasurements(leaseId, new bytes[](0));
    }

    function test_NoPolicy_Views() external {
        uint256 leaseId = createLease();
        assertFalse(keys.hasKeyPolicy(leaseId), "none");
        assertFalse(keys.failoverAllowed(leaseId), "no failover without a policy");
        assertFalse(keys.isReleasable(leaseId, measurement), "nothing releasable");
        assertEq(keys.keyPolicyOf(leaseId).holders.length, 0, "empty");
    }

    function test_IsReleasable_FollowsTheChain() external {
        uint256 leaseId = acceptedLease();
        setPolicy(leaseId, true);
        assertFalse(keys.isReleasable(leaseId, measurement), "not attested");
        submitReport(leaseId, REPORT_HASH);
        assertFalse(keys.isReleasable(leaseId, measurement), "pending is not enough");
        confirmReport(leaseId, REPORT_HASH, true);
        assertTrue(keys.isReleasable(leaseId, measurement), "verified with an allowed measurement");
        assertFalse(keys.isReleasable(leaseId, hex"aa"), "a malformed measurement");
        bytes memory other = abi.encodePacked(bytes32(uint256(1)), bytes16(uint128(2)));
        assertFalse(keys.isReleasable(leaseId, other), "a measurement the lease is not attested with");
        // The renter removes the measurement: no more release (an app upgrade).
        bytes[] memory next = new bytes[](1);
        next[0] = other;
        vm.prank(renter);
        keys.updateMeasurements(leaseId, next);
        assertFalse(keys.isReleasable(leaseId, measurement), "no longer allowed");
        next[0] = measurement;
        vm.prank(renter);
        keys.updateMeasurements(leaseId, next);
        assertTrue(keys.isReleasable(leaseId, measurement), "allowed again");
        // Expired: no release.
        vm.warp(block.timestamp + REATTEST_INTERVAL);
        assertFalse(keys.isReleasable(leaseId, measurement), "expired");
    }

    /// @dev A used-up lease (still ACTIVE until settled) is no longer served: isAttested is false, and so is
    /// isReleasable (a guest the node is no longer paid for gets no share).
    function test_IsReleasable_FalseOnceUsedUp() external {
        registerAndStake();
        vm.prank(renter);
        uint256 leaseId = market.createLease(leaseSpec(), MAX_PRICE, uint128(rate() * 100), measurement);
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
        setPolicy(leaseId, true);
        assertTrue(keys.isReleasable(leaseId, measurement), "released while served");
        vm.warp(block.timestamp + 100);
        assertFalse(attestations.isAttested(leaseId, measurement), "used up: not attested");
        assertFalse(keys.isReleasable(leaseId, measurement), "used up: no release");
    }

    function test_IsReleasable_FalseOnceClosed() external {
        uint256 leaseId = attestedLease();
        setPolicy(leaseId, true);
        assertTrue(keys.isReleasable(leaseId, measurement), "released while active");
        vm.prank(renter);
        market.closeLease(leaseId);
        assertFalse(keys.isReleasable(leaseId, measurement), "closed");
    }
}
