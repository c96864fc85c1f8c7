// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

import {IAttestationRegistry} from "../interfaces/IAttestationRegistry.sol";
import {Errors} from "../libraries/Errors.sol";

/// @title AttestedService
/// @notice Example dApp: accepts a result only when it is signed inside the guest of a lease that is
/// currently attested to run the exact code (launch measurement) this contract was deployed for.
/// @dev The signer is the guest's own key (`IAttestationRegistry.attestedSignerOf`), made at boot
/// inside the guest and bound by the attestation; the node key, and so the host's operator, cannot
/// sign as the guest (an operator renting its own node cannot post what it likes). The signature is
/// EIP-712 over `GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)` with
/// resultHash = keccak256(result), in the guest's domain {name "cvm.guest", version "1", chainId,
/// verifyingContract = the attestation registry} (not this contract: the guest signs for any dApp of
/// that registry, and `request` names what the dApp asked). Each request is answered once.
contract AttestedService {
    /// @notice EIP-712 type of a result signed by the guest.
    bytes32 public constant GUEST_RESULT_TYPEHASH =
        keccak256("GuestResult(uint256 leaseId,bytes32 request,bytes32 resultHash)");

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("cvm.guest");
    bytes32 private constant _VERSION_HASH = keccak256("1");

    /// @notice Emitted when an attested guest's result is accepted.
    event ResultPosted(uint256 indexed leaseId, bytes32 indexed request, bytes32 resultHash, address signer);

    /// @notice The registry asked whether a lease is attested, and for its attested signer.
    IAttestationRegistry public immutable registry;

    /// @notice The 48-byte launch measurement of the code this service trusts.
    bytes public expectedMeasurement;

    /// @notice keccak256 of the latest result accepted from each lease.
    mapping(uint256 leaseId => bytes32 resultHash) public results;

    /// @notice Requests already answered (a signed result is accepted once).
    mapping(bytes32 request => bool) public answered;

    constructor(IAttestationRegistry registry_, bytes memory expectedMeasurement_) {
        registry = registry_;
        expectedMeasurement = expectedMeasurement_;
    }

    /// @notice The guest's EIP-712 domain separator on this chain (verifyingContract = the registry).
    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(registry)));
    }

    /// @notice The EIP-712 digest the guest signs for `result` to `request` of `leaseId`.
    function resultDigest(uint256 leaseId, bytes32 request, bytes calldata result) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(GUEST_RESULT_TYPEHASH, leaseId, request, keccak256(result)));
        return MessageHashUtils.toTypedDataHash(domainSeparator(), structHash);
    }

    /// @notice Records `result` for `request`, only while `leaseId` is attested with the expected
    /// measurement and `signature` is the lease's attested signer's (never the node key's).
    /// @dev Anyone may relay the transaction: the signature, not the sender, is what counts.
    /// Reverts: AttestedService_NotAttested, AttestedService_RequestAnswered,
    /// AttestedService_NotAttestedSigner.
    function postResult(uint256 leaseId, bytes32 request, bytes calldata result, bytes calldata signature)
        external
    {
        if (!registry.isAttested(leaseId, expectedMeasurement)) revert Errors.AttestedService_NotAttested(leaseId);
        if (answered[request]) revert Errors.AttestedService_RequestAnswered(request);
        address attestedSigner = registry.attestedSignerOf(leaseId);
        (address recovered, ECDSA.RecoverError error_,) =
            ECDSA.tryRecover(resultDigest(leaseId, request, result), signature);
        if (error_ != ECDSA.RecoverError.NoError || attestedSigner == address(0) || recovered != attestedSigner) {
            revert Errors.AttestedService_NotAttestedSigner(leaseId, recovered, attestedSigner);
        }
        answered[request] = true;
        bytes32 resultHash = keccak256(result);
        results[leaseId] = resultHash;
        emit ResultPosted(leaseId, request, resultHash, recovered);
    }
}
