// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AttestedRandomness} from "../../../src/examples/AttestedRandomness.sol";
import {Base} from "../../Base.t.sol";

/// @notice The randomness example accepts a value only for a request it numbered, once, from a lease
/// attested with its measurement, signed (EIP-712 GuestResult over keccak256(value)) by the guest's
/// attested signer: examples/randomness signs exactly this.
contract Fulfill_AttestedRandomness_Test is Base {
    AttestedRandomness private randomness;
    uint256 private guestKey;
    address private guestSigner;
    address private requester;

    bytes32 private constant VALUE = keccak256("a value only the guest could make");

    function setUp() public override {
        super.setUp();
        randomness = new AttestedRandomness(attestations, measurement);
        guestKey = makeKey("guest signer");
        guestSigner = vm.addr(guestKey);
        requester = makeAddr("requester");
    }

    // ------------------------------------------------------------------ helpers

    function _attested() private returns (uint256 leaseId) {
        leaseId = acceptedLease();
        submitReportWithSigner(leaseId, REPORT_HASH, guestSigner);
        confirmReport(leaseId, REPORT_HASH, true);
    }

    function _request() private returns (bytes32) {
        vm.prank(requester);
        return randomness.requestRandomness();
    }

    /// @dev The guest's signature, built from the documented format (as guest/agent.py signs it).
    function _sign(uint256 key, uint256 leaseId, bytes32 request, bytes32 value, address registry)
        private
        view
        returns (bytes memory)
    {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("cvm.guest"),
                keccak256("1"),
                block.chainid,
                registry
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)"),
                leaseId,
                request,
                keccak256(abi.encodePacked(value))
            )
        );
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, keccak256(abi.encodePacked("\x19\x01", domain, structHash)));
        return abi.encodePacked(r, s, v);
    }

    function _guest(uint256 leaseId, bytes32 request) private view returns (bytes memory) {
        return _sign(guestKey, leaseId, request, VALUE, address(attestations));
    }

    function _expectNotSigner(uint256 leaseId, address recovered) private {
        vm.expectRevert(
            abi.encodeWithSelector(
                AttestedRandomness.AttestedRandomness_NotAttestedSigner.selector, leaseId, recovered, guestSigner
            )
        );
    }

    // ------------------------------------------------------------------ refusals

    function test_RevertWhen_UnknownRequest() external {
        uint256 leaseId = _attested();
        bytes32 request = keccak256("made up by the relayer");
        bytes memory signature = _guest(leaseId, request);
        vm.expectRevert(abi.encodeWithSelector(AttestedRandomness.AttestedRandomness_UnknownRequest.selector, request));
        randomness.fulfill(leaseId, request, VALUE, signature);
    }

    function test_RevertWhen_AlreadyFulfilled() external {
        uint256 leaseId = _attested();
        bytes32 request = _request();
        randomness.fulfill(leaseId, request, VALUE, _guest(leaseId, request));
        bytes32 other = keccak256("a second value for the same request");
        bytes memory signature = _sign(guestKey, leaseId, request, other, address(attestations));
        vm.expectRevert(
            abi.encodeWithSelector(AttestedRandomness.AttestedRandomness_AlreadyFulfilled.selector, request)
        );
        randomness.fulfill(leaseId, request, other, signature);
        assertEq(randomness.randomnessOf(request), VALUE, "first value kept");
    }

    function test_RevertWhen_NotAttested() external {
        uint256 leaseId = acceptedLease();
        submitReportWithSigner(leaseId, REPORT_HASH, guestSigner);
        bytes32 request = _request();
        bytes memory signature = _guest(leaseId, request);
        vm.expectRevert(abi.encodeWithSelector(AttestedRandomness.AttestedRandomness_NotAttested.selector, leaseId));
        randomness.fulfill(leaseId, request, VALUE, signature);
    }

    function test_RevertWhen_OtherMeasurement() external {
        uint256 leaseId = _attested();
        AttestedRandomness other = new AttestedRandomness(attestations, new bytes(48));
        vm.prank(requester);
        bytes32 request = other.requestRandomness();
        bytes memory signature = _guest(leaseId, request);
        vm.expectRevert(abi.encodeWithSelector(AttestedRandomness.AttestedRandomness_NotAttested.selector, leaseId));
        other.fulfill(leaseId, request, VALUE, signature);
    }

    function test_RevertWhen_SignedByTheNodeKey() external {
        uint256 leaseId = _attested();
        bytes32 request = _request();
        bytes memory signature = _sign(makeKey("nodeKey"), leaseId, request, VALUE, address(attestations));
        _expectNotSigner(leaseId, nodeKey);
        vm.prank(nodeKey);
        randomness.fulfill(leaseId, request, VALUE, signature);
    }

    function test_RevertWhen_ValueChanged() external {
        uint256 leaseId = _attested();
        bytes32 request = _request();
        bytes memory signature = _guest(leaseId, request);
        vm.expectRevert();
        randomness.fulfill(leaseId, request, bytes32(uint256(VALUE) ^ 1), signature);
        assertFalse(randomness.fulfilled(request), "not fulfilled");
    }

    function test_RevertWhen_SignedForAnotherRequest() external {
        uint256 leaseId = _attested();
        bytes32 first = _request();
        bytes32 second = _request();
        bytes memory signature = _guest(leaseId, first);
        vm.expectRevert();
        randomness.fulfill(leaseId, second, VALUE, signature);
        assertFalse(randomness.fulfilled(second), "not fulfilled");
    }

    function test_RevertWhen_SignedForAnotherLease() external {
        uint256 leaseId = _attested();
        bytes32 request = _request();
        bytes memory signature = _guest(leaseId + 1, request);
        vm.expectRevert();
        randomness.fulfill(leaseId, request, VALUE, signature);
        assertFalse(randomness.fulfilled(request), "not fulfilled");
    }

    function test_RevertWhen_SignedForAnotherRegistry() external {
        uint256 leaseId = _attested();
        bytes32 request = _request();
        bytes memory signature = _sign(guestKey, leaseId, request, VALUE, address(randomness));
        vm.expectRevert();
        randomness.fulfill(leaseId, request, VALUE, signature);
        assertFalse(randomness.fulfilled(request), "not fulfilled");
    }

    function test_RevertWhen_MalformedSignature() external {
        uint256 leaseId = _attested();
        bytes32 request = _request();
        _expectNotSigner(leaseId, address(0));
        randomness.fulfill(leaseId, request, VALUE, hex"1234");
    }

    function test_RevertWhen_ValueAskedBeforeFulfilment() external {
        bytes32 request = _request();
        vm.expectRevert(abi.encodeWithSelector(AttestedRandomness.AttestedRandomness_NotFulfilled.selector, request));
        randomness.randomnessOf(request);
    }

    // ------------------------------------------------------------------ acceptance

    function test_WhenSignedByTheAttestedSigner() external {
        uint256 leaseId = _attested();
        bytes32 request = _request();
        assertEq(randomness.requesterOf(request), requester, "requester");
        assertEq(
            randomness.valueDigest(leaseId, request, VALUE),
            keccak256(
                abi.encodePacked(
                    "\x19\x01",
                    randomness.domainSeparator(),
                    keccak256(
                        abi.encode(
                            randomness.GUEST_RESULT_TYPEHASH(), leaseId, request, keccak256(abi.encodePacked(VALUE))
                        )
                    )
                )
            ),
            "digest view"
        );
        bytes memory signature = _guest(leaseId, request);
        vm.expectEmit(true, true, false, true, address(randomness));
        emit AttestedRandomness.RandomnessFulfilled(request, leaseId, VALUE, guestSigner);
        vm.prank(stranger);
        randomness.fulfill(leaseId, request, VALUE, signature);
        assertTrue(randomness.fulfilled(request), "fulfilled");
        assertEq(randomness.randomnessOf(request), VALUE, "value");
    }

    function test_WhenRequested_IdsAreDistinctAndBound() external {
        vm.expectEmit(true, true, false, true, address(randomness));
        emit AttestedRandomness.RandomnessRequested(
            keccak256(abi.encode(block.chainid, address(randomness), uint256(0))), requester
        );
        bytes32 first = _request();
        bytes32 second = _request();
        assertTrue(first != second, "distinct");
        assertEq(randomness.requestCount(), 2, "count");
        AttestedRandomness other = new AttestedRandomness(attestations, measurement);
        vm.prank(requester);
        assertTrue(other.requestRandomness() != first, "bound to the contract");
    }
}
