// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestationCourt} from "../src/AttestationCourt.sol";
import {AttestationRegistry} from "../src/AttestationRegistry.sol";
import {KeyService} from "../src/KeyService.sol";
import {LeaseMarket} from "../src/LeaseMarket.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {TestToken} from "../src/test-token/TestToken.sol";
import {IAttestationRegistryCore} from "../src/interfaces/IAttestationRegistryCore.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";
import {ISnpVerifier} from "../src/interfaces/ISnpVerifier.sol";
import {KeyPolicy, LeaseSpec, NodeSpec, TeeType} from "../src/types/DataTypes.sol";
import {Test} from "./base/Test.sol";
import {MockSnpVerifier} from "./mocks/MockSnpVerifier.sol";

/// @notice Deploys the whole system the way a deployment does and offers the steps of a lease.
abstract contract Base is Test {
    uint256 internal constant MIN_STAKE = 100e18;
    uint256 internal constant UNBONDING_DELAY = 8 days;
    uint256 internal constant SLASH_BPS = 1000;
    uint256 internal constant ATTESTATION_WINDOW = 1 hours;
    uint32 internal constant REATTEST_INTERVAL = 12 hours;
    uint96 internal constant PRICE_PER_VCPU = 1e12;
    uint16 internal constant VCPU = 4;
    uint64 internal constant MAX_PRICE = 1e13;
    uint128 internal constant DEPOSIT = 1000e18;
    uint256 internal constant STAKE = 1000e18;
    uint64 internal constant TCB = 0x0b00000000000f03;
    bytes32 internal constant REPORT_HASH = keccak256("report-1");
    bytes32 internal constant CHIP_ID_HASH = keccak256("chip");
    /// @dev The guest's attested signer the tests' node submits (any address but zero and the node key).
    address internal constant SIGNER = address(0x516E4E52);

    TestToken internal token;
    NodeRegistry internal nodes;
    AttestationRegistry internal attestations;
    LeaseMarket internal market;
    MockSnpVerifier internal snp;
    AttestationCourt internal court;
    KeyService internal keys;
    uint256 internal constant MIN_HOLDER_STAKE = 10e18;
    uint256 internal constant HOLDER_UNBONDING = 1 days;
    /// @dev What each test verifier stakes in the court (the default minimum is 1e18).
    uint256 internal constant VERIFIER_STAKE = 100e18;

    address internal admin;
    address internal operator;
    address internal nodeKey;
    address internal renter;
    uint256 internal renterKey;
    address internal verifier;
    address internal verifier2;
    address internal stranger;

    bytes internal measurement;

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        admin = makeAddr("admin");
        operator = makeAddr("operator");
        nodeKey = makeAddr("nodeKey");
        renterKey = uint256(keccak256("renter"));
        renter = vm.addr(renterKey);
        vm.label(renter, "renter");
        verifier = makeAddr("verifier");
        verifier2 = makeAddr("verifier2");
        stranger = makeAddr("stranger");
        measurement = abi.encodePacked(keccak256("ovmf+kernel"), bytes16(keccak256("initrd+cmdline")));

        token = new TestToken();
        nodes = new NodeRegistry(token, admin, MIN_STAKE, UNBONDING_DELAY, SLASH_BPS);
        attestations = new AttestationRegistry(admin, 1, 15 minutes);
        market = new LeaseMarket(token, INodeRegistry(address(nodes)), attestations, admin, ATTESTATION_WINDOW);
        snp = new MockSnpVerifier();
        court = new AttestationCourt(courtSnpVerifier(), attestations, token);
        keys = new KeyService(token, market, attestations, MIN_HOLDER_STAKE, HOLDER_UNBONDING);
        vm.startPrank(admin);
        attestations.setCourt(court);
        nodes.setLeaseMarket(address(market));
        attestations.setLeaseMarket(address(market));
        market.setKeyService(keys);
        attestations.grantRole(attestations.VERIFIER_ROLE(), verifier);
        attestations.grantRole(attestations.VERIFIER_ROLE(), verifier2);
        vm.stopPrank();

        token.mint(operator, 10_000e18);
        token.mint(renter, 10_000e18);
        vm.prank(operator);
        token.approve(address(nodes), type(uint256).max);
        vm.prank(renter);
        token.approve(address(market), type(uint256).max);
        stakeVerifier(verifier);
        stakeVerifier(verifier2);
    }

    /// @dev The report check the court uses: the test double unless a test needs the real one.
    function courtSnpVerifier() internal virtual returns (ISnpVerifier) {
        return snp;
    }

    /// @dev Mints VERIFIER_STAKE to `account` and stakes it in the court.
    function stakeVerifier(address account) internal {
        token.mint(account, VERIFIER_STAKE);
        vm.startPrank(account);
        token.approve(address(court), type(uint256).max);
        court.stake(VERIFIER_STAKE);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ fixtures

    function nodeSpec() internal pure returns (NodeSpec memory) {
        return NodeSpec({
            teeType: TeeType.SEV_SNP,
            vcpu: 64,
            memoryMiB: 256 * 1024,
            diskGiB: 4096,
            region: 276,
            pricePerSecondPerUnit: PRICE_PER_VCPU
        });
    }

    function leaseSpec() internal pure returns (LeaseSpec memory) {
        return LeaseSpec({
            teeType: TeeType.SEV_SNP,
            vcpu: VCPU,
            memoryMiB: 8192,
            diskGiB: 100,
            minNodeStake: uint96(MIN_STAKE),
            reattestInterval: REATTEST_INTERVAL,
            specHash: keccak256("image+ssh-key")
        });
    }

    function rate() internal pure returns (uint256) {
        return uint256(PRICE_PER_VCPU) * VCPU;
    }

    /// @dev The node key's consent to `operator_` registering it.
    function nodeConsent(address operator_) internal view returns (bytes memory) {
        return signNodeConsent(address(nodes), makeKey("nodeKey"), operator_);
    }

    // ------------------------------------------------------------------ steps

    function registerNode() internal {
        vm.prank(operator);
        nodes.register(nodeKey, nodeSpec(), "https://node.example:8443", nodeConsent(operator));
    }

    function registerAndStake() internal {
        registerNode();
        vm.prank(operator);
        nodes.stake(nodeKey, STAKE);
    }

    function createLease() internal returns (uint256 leaseId) {
        vm.prank(renter);
        leaseId = market.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, measurement);
    }

    function acceptedLease() internal returns (uint256 leaseId) {
        registerAndStake();
        leaseId = createLease();
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
    }

    function submitReport(uint256 leaseId, bytes32 reportHash) internal {
        submitReportWithSigner(leaseId, reportHash, SIGNER);
    }

    function submitReportWithSigner(uint256 leaseId, bytes32 reportHash, address signer) internal {
        uint256 nonce = attestations.attestationNonce(leaseId);
        vm.prank(nodeKey);
        attestations.submit(leaseId, nonce, reportHash, measurement, TCB, CHIP_ID_HASH, signer);
    }

    function confirmReport(uint256 leaseId, bytes32 reportHash, bool ok) internal {
        vm.prank(verifier);
        attestations.confirm(leaseId, reportHash, ok);
    }

    /// @dev An active lease with a verified attestation submitted at the current time.
    function attestedLease() internal returns (uint256 leaseId) {
        leaseId = acceptedLease();
        submitReport(leaseId, REPORT_HASH);
        confirmReport(leaseId, REPORT_HASH, true);
    }

    /// @dev A registered key holder `name` with MIN_HOLDER_STAKE staked.
    function stakedHolder(string memory name) internal returns (address holder) {
        holder = makeAddr(name);
        token.mint(holder, MIN_HOLDER_STAKE);
        vm.startPrank(holder);
        token.approve(address(keys), type(uint256).max);
        keys.stakeHolder(MIN_HOLDER_STAKE);
        keys.registerHolder(keccak256(bytes(name)));
        vm.stopPrank();
    }

    /// @dev Three staked holders, 2-of-3, the lease's measurement, failover as given, version 1.
    function keyPolicy(bool failover) internal returns (KeyPolicy memory policy) {
        address[] memory holders = new address[](3);
        holders[0] = stakedHolder("holder-1");
        holders[1] = stakedHolder("holder-2");
        holders[2] = stakedHolder("holder-3");
        bytes[] memory measurements = new bytes[](1);
        measurements[0] = measurement;
        policy = KeyPolicy({
            measurements: measurements,
            failover: failover,
            threshold: 2,
            holders: holders,
            keyVersion: 1,
            manifestHash: keccak256("manifest-1")
        });
    }

    /// @dev The renter sets a 2-of-3 key policy on `leaseId`.
    function setPolicy(uint256 leaseId, bool failover) internal returns (KeyPolicy memory policy) {
        policy = keyPolicy(failover);
        vm.prank(renter);
        keys.setKeyPolicy(leaseId, policy);
    }

    function verifierRole() internal view returns (bytes32) {
        return IAttestationRegistryCore(address(attestations)).VERIFIER_ROLE();
    }
}
