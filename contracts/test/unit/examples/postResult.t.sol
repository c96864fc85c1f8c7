// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestedService} from "../../../src/examples/AttestedService.sol";
import {Errors} from "../../../src/libraries/Errors.sol";
import {Base} from "../../Base.t.sol";

/// @notice The example dApp accepts a result only when the lease is attested with its measurement
/// and the result is signed (EIP-712 GuestResult) by the guest's attested signer, once per request.
/// On the old code `postResult(leaseId, result)` took whatever the lease's node key sent, so an
/// operator renting its own node with a public measurement posted anything: every refusal below
/// would have been an accepted result there.
contract PostResult_AttestedService_Test is Base {
    AttestedService private service;
    uint256 private guestKey;
    address private guestSigner;

    bytes32 private constant REQUEST = keccak256("price of ETH at block 1");
    bytes private constant RESULT = "3141.59";

    function setUp() public override {
        super.setUp();
        service = new AttestedService(attestations, measurement);
        guestKey = makeKey("guest signer");
        guestSigner = vm.addr(guestKey);
    }

    // ------------------------------------------------------------------ helpers

    function _attested() private returns (uint256 leaseId) {
        leaseId = acceptedLease();
        submitReportWithSigner(leaseId, REPORT_HASH, guestSigner);
        confirmReport(leaseId, REPORT_HASH, true);
    }

    /// @dev The guest's signature, built from the documented format (not from the service's digest view).
    function _sign(uint256 key, uint256 leaseId, bytes32 request, bytes memory result, uint256 chainId, address registry)
        private
        pure
        returns (bytes memory)
    {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("cvm.guest"),
                keccak256("1"),
                chainId,
                registry
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)"),
                leaseId,
                request,
                keccak256(result)
            )
        );
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, keccak256(abi.encodePacked("\x19\x01", domain, structHash)));
        return abi.encodePacked(r, s, v);
    }

    function _guestSignature(uint256 leaseId) private view returns (bytes memory) {
        return _sign(guestKey, leaseId, REQUEST, RESULT, block.chainid, address(attestations));
    }

    function _expectNotSigner(uint256 leaseId, address recovered) private {
        vm.expectRevert(
            abi.encodeWithSelector(Errors.AttestedService_NotAttestedSigner.selector, leaseId, recovered, guestSigner)
        );
    }

    // ------------------------------------------------------------------ refusals

    function test_RevertWhen_NotAttested() external {
        uint256 leaseId = acceptedLease();
        submitReportWithSigner(leaseId, REPORT_HASH, guestSigner);
        bytes memory signature = _guestSignature(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestedService_NotAttested.selector, leaseId));
        service.postResult(leaseId, REQUEST, RESULT, signature);
    }

    function test_RevertWhen_OtherMeasurement() external {
        uint256 leaseId = _attested();
        AttestedService other = new AttestedService(attestations, new bytes(48));
        bytes memory signature = _guestSignature(leaseId);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestedService_NotAttested.selector, leaseId));
        other.postResult(leaseId, REQUEST, RESULT, signature);
    }

    /// @notice The node key's own signature is refused, whoever sends it (the host is not the guest).
    function test_RevertWhen_SignedByTheNodeKey() external {
        uint256 leaseId = _attested();
        bytes memory signature = _sign(makeKey("nodeKey"), leaseId, REQUEST, RESULT, block.chainid, address(attestations));
        _expectNotSigner(leaseId, nodeKey);
        vm.prank(nodeKey);
        service.postResult(leaseId, REQUEST, RESULT, signature);
    }

    /// @notice An operator renting its own node (public measurement) cannot post: neither its own key,
    /// nor its node key, is the guest's signer.
    function test_RevertWhen_OperatorRentsItsOwnNode() external {
        registerAndStake();
        uint256 operatorKey = makeKey("operator");
        token.mint(operator, DEPOSIT);
        vm.startPrank(operator);
        token.approve(address(market), type(uint256).max);
        uint256 leaseId = market.createLease(leaseSpec(), MAX_PRICE, DEPOSIT, measurement);
        vm.stopPrank();
        vm.prank(nodeKey);
        market.acceptLease(leaseId);
        submitReportWithSigner(leaseId, REPORT_HASH, guestSigner);
        confirmReport(leaseId, REPORT_HASH, true);

        bytes memory byOperator = _sign(operatorKey, leaseId, REQUEST, RESULT, block.chainid, address(attestations));
        _expectNotSigner(leaseId, operator);
        vm.prank(operator);
        service.postResult(leaseId, REQUEST, RESULT, byOperator);

        bytes memory byNode = _sign(makeKey("nodeKey"), leaseId, REQUEST, RESULT, block.chainid, address(attestations));
        _expectNotSigner(leaseId, nodeKey);
        vm.prank(nodeKey);
        service.postResult(leaseId, REQUEST, RESULT, byNode);
    }

    /// @notice A registry refuses the node key as a lease's signer, so a node cannot name itself.
    function test_RevertWhen_NodeSubmitsItsOwnKeyAsSigner() external {
        uint256 leaseId = acceptedLease();
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestationRegistry_InvalidSigner.selector, leaseId, nodeKey));
        vm.prank(nodeKey);
        attestations.submit(leaseId, 0, REPORT_HASH, measurement, TCB, CHIP_ID_HASH, nodeKey);
    }

    function test_RevertWhen_RequestReplayed() external {
        uint256 leaseId = _attested();
        bytes memory signature = _guestSignature(leaseId);
        service.postResult(leaseId, REQUEST, RESULT, signature);
        vm.expectRevert(abi.encodeWithSelector(Errors.AttestedService_RequestAnswered.selector, REQUEST));
        service.postResult(leaseId, REQUEST, RESULT, signature);
    }

    function test_RevertWhen_SignedForAnotherLease() external {
        uint256 leaseId = _attested();
        bytes memory signature = _sign(guestKey, leaseId + 1, REQUEST, RESULT, block.chainid, address(attestations));
        vm.expectRevert();
        service.postResult(leaseId, REQUEST, RESULT, signature);
        assertEq(service.answered(REQUEST), false, "not answered");
    }

    function test_RevertWhen_SignedForAnotherChain() external {
        uint256 leaseId = _attested();
        bytes memory signature = _sign(guestKey, leaseId, REQUEST, RESULT, block.chainid + 1, address(attestations));
        vm.expectRevert();
        service.postResult(leaseId, REQUEST, RESULT, signature);
        assertEq(service.answered(REQUEST), false, "not answered");
    }

    function test_RevertWhen_SignedForAnotherRegistry() external {
        uint256 leaseId = _attested();
        bytes memory signature = _sign(guestKey, leaseId, REQUEST, RESULT, block.chainid, address(service));
        vm.expectRevert();
        service.postResult(leaseId, REQUEST, RESULT, signature);
        assertEq(service.answered(REQUEST), false, "not answered");
    }

    function test_RevertWhen_ResultChanged() external {
        uint256 leaseId = _attested();
        bytes memory signature = _guestSignature(leaseId);
        vm.expectRevert();
        service.postResult(leaseId, REQUEST, "2718.28", signature);
    }

    function test_RevertWhen_MalformedSignature() external {
        uint256 leaseId = _attested();
        _expectNotSigner(leaseId, address(0));
        service.postResult(leaseId, REQUEST, RESULT, hex"1234");
    }

    // ------------------------------------------------------------------ acceptance

    /// @notice Anyone may relay the guest's signed result; it is stored and announced once.
    function test_WhenSignedByTheAttestedSigner() external {
        uint256 leaseId = _attested();
        assertEq(attestations.attestedSignerOf(leaseId), guestSigner, "attested signer");
        bytes memory signature = _guestSignature(leaseId);
        assertEq(
            service.resultDigest(leaseId, REQUEST, RESULT),
            keccak256(
                abi.encodePacked(
                    "\x19\x01",
                    service.domainSeparator(),
                    keccak256(abi.encode(service.GUEST_RESULT_TYPEHASH(), leaseId, REQUEST, keccak256(RESULT)))
                )
            ),
            "digest view"
        );
        vm.expectEmit(true, true, false, true, address(service));
        emit AttestedService.ResultPosted(leaseId, REQUEST, keccak256(RESULT), guestSigner);
        vm.prank(stranger);
        service.postResult(leaseId, REQUEST, RESULT, signature);
        assertEq(service.results(leaseId), keccak256(RESULT), "stored");
        assertTrue(service.answered(REQUEST), "answered");
    }

    /// @notice During a seamless re-attestation the previous verified attestation's signer still
    /// signs; the pending one's does not until it is verified.
    function test_WhenReattestationPending_PreviousSignerSigns() external {
        uint256 leaseId = _attested();
        vm.warp(block.timestamp + REATTEST_INTERVAL / 2);
        uint256 nextKey = makeKey("next guest signer");
        submitReportWithSigner(leaseId, keccak256("report-2"), vm.addr(nextKey));
        assertEq(attestations.signerOf(leaseId), vm.addr(nextKey), "latest submitted signer");
        assertEq(attestations.attestedSignerOf(leaseId), guestSigner, "previous verified signer vouches");
        bytes memory byNext = _sign(nextKey, leaseId, REQUEST, RESULT, block.chainid, address(attestations));
        _expectNotSigner(leaseId, vm.addr(nextKey));
        service.postResult(leaseId, REQUEST, RESULT, byNext);
        service.postResult(leaseId, REQUEST, RESULT, _guestSignature(leaseId));
    }
}
