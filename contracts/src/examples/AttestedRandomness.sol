// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

import {IAttestationRegistry} from "../interfaces/IAttestationRegistry.sol";

/// @title AttestedRandomness
/// @notice Example dApp for examples/randomness: a random value is accepted for a request only when
/// it is signed by the attested signer of a lease that runs the exact randomness service (launch
/// measurement) this contract was deployed for.
/// @dev The service in the guest derives the value as HMAC-SHA256(seed, request) with a seed made at
/// boot that never leaves the guest, and asks the guest agent to sign it: EIP-712
/// `GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)` with resultHash =
/// keccak256(abi.encodePacked(value)) in the guest's domain {name "cvm.guest", version "1", chainId,
/// verifyingContract = the attestation registry}. Neither the node's operator nor the relayer knows
/// the seed, so neither can choose the value; requests are numbered by this contract, so a requester
/// commits to a request before its value exists, and each request is fulfilled once.
/// Errors are declared here (not in Errors.sol) so the example can be copied out on its own.
contract AttestedRandomness {
    /// @notice EIP-712 type of a result signed by the guest.
    bytes32 public constant GUEST_RESULT_TYPEHASH =
        keccak256("GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)");

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("cvm.guest");
    bytes32 private constant _VERSION_HASH = keccak256("1");

    // ----------------------------------------------------------------------------- errors

    /// @notice Thrown when the lease is not attested with the measurement this contract trusts.
    error AttestedRandomness_NotAttested(uint256 leaseId);

    /// @notice Thrown when `request` was never made by `requestRandomness`.
    error AttestedRandomness_UnknownRequest(bytes32 request);

    /// @notice Thrown when `request` already has its value.
    error AttestedRandomness_AlreadyFulfilled(bytes32 request);

    /// @notice Thrown when the signature is not the lease's attested signer's.
    error AttestedRandomness_NotAttestedSigner(uint256 leaseId, address recovered, address attestedSigner);

    /// @notice Thrown when a value is asked for a request that has none yet.
    error AttestedRandomness_NotFulfilled(bytes32 request);

    // ----------------------------------------------------------------------------- events

    /// @notice Emitted when `requester` asks for a random value; the service answers `request`.
    event RandomnessRequested(bytes32 indexed request, address indexed requester);

    /// @notice Emitted when the attested guest's value for `request` is accepted.
    event RandomnessFulfilled(bytes32 indexed request, uint256 indexed leaseId, bytes32 value, address signer);

    // ----------------------------------------------------------------------------- state

    /// @notice The registry asked whether a lease is attested, and for its attested signer.
    IAttestationRegistry public immutable registry;

    /// @notice The 48-byte launch measurement of the randomness service this contract trusts.
    bytes public expectedMeasurement;

    /// @notice Requests made so far (the next request's number).
    uint256 public requestCount;

    /// @notice Who made each request (address(0): no such request).
    mapping(bytes32 request => address requester) public requesterOf;

    /// @notice The value of each fulfilled request, and whether it is fulfilled (a value may be 0).
    mapping(bytes32 request => bytes32 value) private _values;
    mapping(bytes32 request => bool) public fulfilled;

    constructor(IAttestationRegistry registry_, bytes memory expectedMeasurement_) {
        registry = registry_;
        expectedMeasurement = expectedMeasurement_;
    }

    /// @notice Asks for a random value: returns the request id to give the service.
    /// @dev The id is bound to this contract, the chain and a counter, so it cannot be chosen by the
    /// requester and never repeats.
    function requestRandomness() external returns (bytes32 request) {
        request = keccak256(abi.encode(block.chainid, address(this), requestCount));
        ++requestCount;
        requesterOf[request] = msg.sender;
        emit RandomnessRequested(request, msg.sender);
    }

    /// @notice The guest's EIP-712 domain separator on this chain (verifyingContract = the registry).
    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(registry)));
    }

    /// @notice The EIP-712 digest the guest signs for `value` answering `request` of `leaseId`.
    function valueDigest(uint256 leaseId, bytes32 request, bytes32 value) public view returns (bytes32) {
        bytes32 resultHash = keccak256(abi.encodePacked(value));
        bytes32 structHash = keccak256(abi.encode(GUEST_RESULT_TYPEHASH, leaseId, request, resultHash));
        return MessageHashUtils.toTypedDataHash(domainSeparator(), structHash);
    }

    /// @notice Records `value` for `request` when `signature` is the attested signer's of `leaseId`,
    /// which must be attested with the expected measurement. Anyone may relay it.
    /// @dev Reverts: AttestedRandomness_UnknownRequest, AttestedRandomness_AlreadyFulfilled,
    /// AttestedRandomness_NotAttested, AttestedRandomness_NotAttestedSigner.
    function fulfill(uint256 leaseId, bytes32 request, bytes32 value, bytes calldata signature) external {
        if (requesterOf[request] == address(0)) revert AttestedRandomness_UnknownRequest(request);
        if (fulfilled[request]) revert AttestedRandomness_AlreadyFulfilled(request);
        if (!registry.isAttested(leaseId, expectedMeasurement)) revert AttestedRandomness_NotAttested(leaseId);
        address attestedSigner = registry.attestedSignerOf(leaseId);
        (address recovered, ECDSA.RecoverError error_,) =
            ECDSA.tryRecover(valueDigest(leaseId, request, value), signature);
        if (error_ != ECDSA.RecoverError.NoError || attestedSigner == address(0) || recovered != attestedSigner) {
            revert AttestedRandomness_NotAttestedSigner(leaseId, recovered, attestedSigner);
        }
        fulfilled[request] = true;
        _values[request] = value;
        emit RandomnessFulfilled(request, leaseId, value, recovered);
    }

    /// @notice The value of a fulfilled request; reverts with AttestedRandomness_NotFulfilled before.
    function randomnessOf(bytes32 request) external view returns (bytes32) {
        if (!fulfilled[request]) revert AttestedRandomness_NotFulfilled(request);
        return _values[request];
    }
}
