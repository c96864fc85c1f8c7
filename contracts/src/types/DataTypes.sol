// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationRegistry} from "../interfaces/IAttestationRegistry.sol";

// Shared enums and structs of the cvm contracts. Storage widths are chosen so that the
// hot records pack into as few slots as possible; each struct says why a field has its width.

/// @notice Trusted execution technology a node offers and a lease requires.
enum TeeType {
    NONE,
    SEV_SNP,
    TDX
}

/// @notice Capabilities and price a node operator declares for a node key.
/// @dev Calldata shape of `NodeRegistry.register` / `update`.
struct NodeSpec {
    TeeType teeType;
    // 65,535 vCPUs is far above any single host.
    uint16 vcpu;
    // MiB in 32 bits covers 4 PiB of memory.
    uint32 memoryMiB;
    // GiB in 32 bits covers 4 EiB of disk.
    uint32 diskGiB;
    // Region code chosen by the deployment (e.g. ISO 3166 numeric), 16 bits.
    uint16 region;
    // Token base units per second per vCPU; 96 bits (7.9e28) is beyond any token supply rate.
    uint96 pricePerSecondPerUnit;
}

/// @notice A registered node as stored by `NodeRegistry` (three slots).
struct Node {
    // slot 0: operator (20) + teeType (1) + vcpu (2) + memoryMiB (4) + diskGiB (4) = 31 bytes
    address operator;
    TeeType teeType;
    uint16 vcpu;
    uint32 memoryMiB;
    uint32 diskGiB;
    // slot 1: stake (16) + price (12) + region (2) + missedAttestations (2) = 32 bytes.
    // 128-bit amounts hold any realistic ERC-20 supply (3.4e38 base units).
    uint128 stake;
    uint96 pricePerSecondPerUnit;
    uint16 region;
    // Faults that are not slashed but count against the node (missed re-attestations); saturates.
    uint16 missedAttestations;
    // slot 2: stake waiting out the unbonding delay (still slashable) and when it unlocks.
    uint128 unbonding;
    // uint40 seconds lasts until the year 36812.
    uint40 unbondingEndsAt;
}

/// @notice Public part of a lease request; the private part (image, SSH key, cloud-init)
/// stays off chain and is bound by `specHash`.
struct LeaseSpec {
    TeeType teeType;
    uint16 vcpu;
    uint32 memoryMiB;
    uint32 diskGiB;
    // Minimum active stake the accepting node must hold (in addition to the registry minimum).
    uint96 minNodeStake;
    // Seconds an attestation stays valid; the node must re-attest within this interval.
    uint32 reattestInterval;
    // keccak256 of the private part of the spec, delivered to the backend.
    bytes32 specHash;
}

/// @notice Life cycle of a lease.
enum LeaseStatus {
    NONE,
    OPEN,
    ACTIVE,
    CLOSED
}

/// @notice Why a lease was closed.
enum CloseReason {
    NONE,
    // The renter closed it (before acceptance, or while attested).
    RENTER,
    // The deposit was fully earned; anyone settled it.
    EXHAUSTED,
    // No attestation before the deadline after accept (node slashed), or the renter closed
    // after a missed re-attestation deadline (counts against the node).
    ATTESTATION_MISSED,
    // The verifier quorum rejected an attestation (node slashed).
    ATTESTATION_REJECTED,
    // The node key gave the lease up.
    NODE_EXIT
}

/// @notice A lease as `LeaseMarket.getLease` returns it (assembled from a `LeaseRecord`).
struct Lease {
    address renter;
    uint40 acceptedAt;
    // Zero until the lease closes.
    uint40 closedAt;
    CloseReason closeReason;
    address nodeKey;
    // Fixed at accept: node price per vCPU times the lease's vCPUs (<= maxPricePerSecond).
    uint88 ratePerSecond;
    LeaseStatus status;
    // Escrowed deposit and what the operator already claimed. On close `deposit` is cut to what
    // was earned (the rest is refunded), so escrow = deposit - claimed.
    uint128 deposit;
    uint128 claimed;
    // The acceptance terms of the public spec.
    TeeType teeType;
    uint16 vcpu;
    uint32 memoryMiB;
    uint32 diskGiB;
    uint96 minNodeStake;
    uint64 maxPricePerSecond;
    // Fixed at accept (zero while open): the stake this lease bonds, locked until it ends and what
    // a slash of it takes: max(registry minStake, minNodeStake) x the registry's slashBps at accept.
    uint128 bond;
    // Fixed at accept, zero unless active: acceptedAt plus the attestation window in force then.
    uint40 attestBy;
}

/// @notice A lease as stored by `LeaseMarket`: four slots, every one of them written at create,
/// so that accept, claim and close only rewrite slots (5,000 gas each instead of 22,100).
struct LeaseRecord {
    // slot 0: renter (20) + acceptedAt (5) + timeMark (5) + closeReason (1) + declines (1) = 32 bytes.
    // uint40 seconds last until the year 36812.
    address renter;
    uint40 acceptedAt;
    // The first-attestation deadline while ACTIVE, the closing time once CLOSED (never both).
    uint40 timeMark;
    CloseReason closeReason;
    // Declines so far (saturating): while zero, accept skips the per-node "declined before" lookup.
    uint8 declines;
    // slot 1: nodeKey (20) + bond (11) + status (1) = 32 bytes: what the attestation registry
    // asks the market for (node key, status) sits in this one slot. A bond is at most half of a
    // required stake; 88 bits (3e26 base units) is far above any sane stake requirement.
    address nodeKey;
    uint88 bond;
    LeaseStatus status;
    // slot 2: deposit (12) + claimed (12) + ratePerSecond (8) = 32 bytes. 96-bit amounts
    // (7.9e28 base units, 79 billion tokens of 18 decimals) hold any single lease; the rate is
    // at most the renter's 64-bit maxPricePerSecond.
    uint96 deposit;
    uint96 claimed;
    uint64 ratePerSecond;
    // slot 3: the acceptance terms of the public spec (31 bytes) + held (1) = 32 bytes.
    TeeType teeType;
    uint16 vcpu;
    uint32 memoryMiB;
    uint32 diskGiB;
    uint96 minNodeStake;
    // 1.8e19 base units per second is far above any sane price.
    uint64 maxPricePerSecond;
    // Closed while its attestation awaited the verifiers: the pending time's pay is held in escrow
    // (and the bond stays locked) until the verdict or the end of the verification window.
    bool held;
}

/// @notice What a node's active leases hold of it, kept by `LeaseMarket` (one slot).
/// @dev The sums are bounded by the node's own uint16/uint32 capacities and uint128 stake.
struct NodeUsage {
    // Sum of the bonds of the node's active leases; the registry refuses to unstake below it.
    uint128 bonded;
    uint16 vcpu;
    uint32 memoryMiB;
    uint32 diskGiB;
}

/// @notice A lease's attestation progress as the market reads it in one call (see
/// `IAttestationRegistryCore.progressOf`).
struct AttestationProgress {
    // Effective status now (Pending past the verification window, or a failed challenge, is Expired).
    IAttestationRegistry.Status status;
    // Attestations submitted in the lease's current segment: since its last failover, or all of them
    // (the attestation nonce, `attestationNonce`, counts all of them).
    uint32 nonce;
    // (verifiedSeconds and pendingSeconds are of the current segment too.)
    // Until when the quorum may decide the latest attestation (zero unless it is stored Pending).
    uint40 decideBy;
    // Verified seconds so far (what is payable).
    uint64 verifiedSeconds;
    // Seconds the latest, still undecided attestation would add if verified.
    uint64 pendingSeconds;
    // The latest attestation was left undecided past the verification window although a verifier
    // allowed to vote approved it, or no verifier was allowed to vote: not the node's fault (no slash,
    // no miss), and the node may submit again.
    bool excused;
}

/// @notice A verifier's stake in the attestation registry (issue 21). Stake backs every vote the
/// verifier casts until that vote's dispute window closes; no admin can take it, only a dispute that
/// overturns a verdict it voted for (a `DisputeTerms.slashBps` fraction of stake + unbonding).
struct VerifierStake {
    // slot 0 (22 bytes), read and rewritten by every vote: a vote costs no fresh slot.
    // Active stake: a verifier votes only while this is at least `DisputeTerms.minVerifierStake`.
    uint96 stake;
    // The latest end of a dispute window of a vote it cast: its stake cannot leave before.
    uint40 lockedUntil;
    // When its unbonding stake may leave (VERIFICATION_WINDOW after its latest unstake request),
    // and not before `lockedUntil`.
    uint40 unlocksAt;
    // slot 1: requested out, still slashable.
    uint96 unbonding;
}

/// @notice The registry admin's dispute parameters. `window` is fixed per lease when the lease is
/// opened (later changes apply to later leases); the others apply to disputes and votes from the change on.
struct DisputeTerms {
    // Seconds after the verification window of a submission in which its verdict can be disputed:
    // a whole number of hours, 1 hour to MAX_DISPUTE_WINDOW (default 1 day).
    uint32 window;
    // Bond (stake token) a disputer puts up: back with a reward if the verdict is overturned, to the
    // verdict's voters if it stands.
    uint96 bond;
    // Fraction (basis points, at most 10,000) of stake + unbonding a voter of an overturned verdict loses.
    uint16 slashBps;
    // Active stake a verifier needs to vote.
    uint96 minVerifierStake;
}

/// @notice One submission's verdict as a dispute reads it (`IAttestationRegistryCore.submissionOf`).
struct SubmissionInfo {
    // 1-based submission number (the nonce the report binds is number - 1); zero if unknown.
    uint32 number;
    // The verdict: Verified, Rejected, or Pending (undecided, not disputable).
    IAttestationRegistry.Status verdict;
    address signer;
    uint40 submittedAt;
    // Until when its verdict can be disputed (submittedAt + VERIFICATION_WINDOW + the lease's window).
    uint40 disputableUntil;
    // Verified seconds of the lease before this submission (what a false Verified leaves paid).
    uint32 bankedBefore;
    bool disputed;
    // Confirmed by the on-chain check (a dispute that upheld it, or `confirmOnChain`).
    bool confirmedOnChain;
    // A challenge of its Verified verdict is pending in the court (`IAttestationCourt.challengeOf`):
    // the defender must prove it genuine by the deadline; the court settles it even after the window.
    bool challenged;
}

/// @notice A pending challenge of a Verified verdict (`IAttestationCourt.challengeOf`), two slots: a dispute
/// whose on-chain check could not prove the report false. The verdict's defender must prove it genuine
/// (`defend`) by `deadline`; after it, anyone `resolve`s it as false. All zero: none pending.
struct Challenge {
    address disputer;
    // When the defence closes (the dispute time + `RESPONSE_WINDOW`, fixed at opening).
    uint40 deadline;
    // The disputer's bond, held by the court until the challenge is settled.
    uint96 bond;
}

/// @notice A key holder of the threshold key service (`IKeyService.holderOf`), two slots.
struct HolderInfo {
    // The holder's X25519 public key: renters seal its share of a lease's root key to it (HPKE).
    bytes32 key;
    // Active stake: the holder may be named in a key policy only while this is at least `minHolderStake`.
    uint96 stake;
    // Requested out, waiting for `unlocksAt`.
    uint96 unbonding;
    uint40 unlocksAt;
    bool registered;
}

/// @notice A lease's key-release policy (`IKeyService.keyPolicyOf`), set by the lease's renter only.
struct KeyPolicy {
    // The launch measurements (48 bytes each, 1..8) a guest may have to receive the key.
    bytes[] measurements;
    // Whether the lease may fail over to another node (`ILeaseMarket.failover`).
    bool failover;
    // Shares needed to rebuild the root key (1..holders.length).
    uint8 threshold;
    // The key holders (1..16, distinct, each active when the policy was set); share i+1 is holders[i]'s.
    address[] holders;
    // Increases with every new root key (rekey); the guest and holders accept only this version.
    uint32 keyVersion;
    // EIP-712 digest of the renter-signed key manifest (holders, their keys, root commitment, epoch key).
    bytes32 manifestHash;
}

// Why a lease failed over (`ILeaseMarket.LeaseFailedOver`). 1: the node missed its first attestation
// (bond slashed); 2: its latest attestation Expired (not re-attested in time, left undecided without an
// allowed approval, or a challenge unanswered; a miss).
uint8 constant FAILOVER_FIRST_ATTESTATION_MISSED = 1;
uint8 constant FAILOVER_ATTESTATION_EXPIRED = 2;
// 3: the node left (`exitLease`) without fault while the renter's policy allows failover (bond freed, no miss).
uint8 constant FAILOVER_NODE_EXIT = 3;
// 4: its latest attestation was Rejected (bond slashed and burned, as a close would): the lease moves
// instead of ending, so no node can end it (and with it the renter's key and data) by a bad report.
uint8 constant FAILOVER_ATTESTATION_REJECTED = 4;
// 5: a dispute found its Verified verdict false (bond slashed, pay only for the verified time before the false
// submission): the lease moves as on a rejection, so a forged report verified by colluding voters cannot
// end it either.
uint8 constant FAILOVER_VERDICT_OVERTURNED = 5;

/// @notice What a node a lease failed over from earned on it, kept (one slot) so that a dispute later
/// overturning one of its verdicts finds its rate, earnings and bond (`onSegmentOverturned`,
/// `onRejectedOverturned`).
struct Segment {
    uint64 ratePerSecond;
    // What it earned on the lease up to its fault (claimed, or credited to its operator at the failover),
    // cut to what stays earned after an overturn.
    uint96 earned;
    // The lease's bond while it served (freed at the failover); zero once an overturn slashed it.
    uint88 bond;
    // It failed over on a Rejected verdict that burned `bond`: a dispute overturning that verdict gives
    // the bond back (once); an overturn of an earlier Verified verdict of the node clears it (the bond
    // stays burned, the node was at fault).
    bool rejected;
}
