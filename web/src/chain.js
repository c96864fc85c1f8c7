// The chain side of the console (viem): reads through the deployment's RPC directly, writes
// through the connected wallet. ABIs come from the compiled contracts (contracts/out).
import { ContractFunctionRevertedError, createPublicClient, defineChain, http, parseEventLogs, parseSignature } from "viem";
import { abi as leaseMarketAbi } from "abi:LeaseMarket";
import { abi as nodeRegistryAbi } from "abi:NodeRegistry";
import { abi as attestationRegistryAbi } from "abi:AttestationRegistry";
import { abi as tokenAbi } from "abi:TestToken";
import { state as wallet, explain, requireWallet } from "./wallet.js";

export const LEASE_STATUS = ["none", "open", "active", "closed"];
export const ATTESTATION_STATUS = ["None", "Pending", "Verified", "Rejected", "Expired"];
export const CLOSE_REASON = ["none", "closed by the renter", "deposit exhausted", "attestation missed", "attestation rejected", "node exit"];

let config;
let chain;
let reader;

export function useChain(consoleConfig) {
  config = consoleConfig;
  chain = defineChain({
    id: config.chainId,
    name: `cvm chain ${config.chainId}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [config.rpcUrl] } },
  });
  reader = createPublicClient({ chain, transport: http(config.rpcUrl) });
}

const market = (functionName, args = []) => reader.readContract({ address: config.leaseMarket, abi: leaseMarketAbi, functionName, args });
const registry = (functionName, args = []) => reader.readContract({ address: config.nodeRegistry, abi: nodeRegistryAbi, functionName, args });
const token = (functionName, args = []) => reader.readContract({ address: config.token, abi: tokenAbi, functionName, args });

export async function tokenUnits() {
  const [decimals, symbol] = await Promise.all([token("decimals"), token("symbol")]);
  return { decimals: Number(decimals), symbol };
}

export async function balances(address) {
  const [tokens, ether] = await Promise.all([token("balanceOf", [address]), reader.getBalance({ address })]);
  return { tokens, ether };
}

export async function leaseMoney(leaseId) {
  const lease = await market("getLease", [BigInt(leaseId)]);
  const status = LEASE_STATUS[lease.status];
  const [earned, refundable, claimable, progress, held] = await Promise.all([
    market("earned", [BigInt(leaseId)]),
    status === "closed" ? 0n : market("refundable", [BigInt(leaseId)]),
    market("claimable", [BigInt(leaseId)]),
    status === "active" ? progressOf(leaseId) : null,
    status === "closed" ? heldEscrow(leaseId) : null,
  ]);
  // Closing now while the attestation awaits its verdict holds the pay for its time (as closeLease does).
  const wouldHold = progress && ATTESTATION_STATUS[progress.status] === "Pending"
    ? min(progress.pendingSeconds * lease.ratePerSecond, refundable) : 0n;
  return { lease, status, earned, refundable, claimable, wouldHold, held, readAt: Date.now() };
}

const min = (a, b) => (a < b ? a : b);
const progressOf = (leaseId) => reader.readContract({ address: config.attestationRegistry, abi: attestationRegistryAbi, functionName: "progressOf", args: [BigInt(leaseId)] });

// What a closed lease still holds for its attestation's verdict, or null: paid to the node only if
// verified, refunded otherwise. The market has no view of it, so a dry run of finalizeClose tells
// (NothingHeld: nothing; AttestationPending: held until decideBy; success: releasable now).
export async function heldEscrow(leaseId) {
  const id = BigInt(leaseId);
  let releasableAt = 0n;
  try {
    await reader.simulateContract({ address: config.leaseMarket, abi: leaseMarketAbi, functionName: "finalizeClose", args: [id] });
  } catch (error) {
    const revert = error?.walk?.((e) => e instanceof ContractFunctionRevertedError);
    const name = revert?.data?.errorName;
    if (name === "LeaseMarket_NothingHeld") return null;
    if (name !== "LeaseMarket_AttestationPending") throw error;
    releasableAt = revert.data.args[1];
  }
  const [lease, earned] = await Promise.all([market("getLease", [id]), market("earned", [id])]);
  const amount = lease.deposit > earned ? lease.deposit - earned : 0n;
  return { amount, releasableAt, releasable: releasableAt === 0n };
}

export const nodeOnChain = (nodeKey) => registry("getNode", [nodeKey]);
export const credits = (address) => market("credits", [address]);
export const claimable = (leaseId) => market("claimable", [BigInt(leaseId)]);

export async function attestationOnChain(leaseId, expectedMeasurement) {
  const id = BigInt(leaseId);
  const read = (functionName, args) => reader.readContract({ address: config.attestationRegistry, abi: attestationRegistryAbi, functionName, args });
  const [attestation, attested] = await Promise.all([read("attestationOf", [id]), read("isAttested", [id, expectedMeasurement])]);
  return { attestation, attested };
}

// Simulate first (a revert is named before anything is signed), then send and wait.
async function send(address, abi, functionName, args) {
  const { account, client } = requireWallet(config);
  try {
    const { request } = await reader.simulateContract({ account, address, abi, functionName, args });
    const hash = await client.writeContract({ ...request, chain });
    const receipt = await reader.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`transaction ${hash} reverted`);
    return receipt;
  } catch (error) {
    throw explain(error);
  }
}

async function signPermit(value, deadline) {
  const { account, client } = requireWallet(config);
  const [[, name, version, chainId, verifyingContract], nonce] = await Promise.all([token("eip712Domain"), token("nonces", [account])]);
  try {
    const signature = await client.signTypedData({
      account,
      domain: { name, version, chainId: Number(chainId), verifyingContract },
      types: { Permit: [
        { name: "owner", type: "address" }, { name: "spender", type: "address" }, { name: "value", type: "uint256" },
        { name: "nonce", type: "uint256" }, { name: "deadline", type: "uint256" },
      ] },
      primaryType: "Permit",
      message: { owner: account, spender: config.leaseMarket, value, nonce, deadline },
    });
    return parseSignature(signature);
  } catch (error) {
    throw explain(error);
  }
}

export async function signMessage(text) {
  const { account, client } = requireWallet(config);
  try {
    return await client.signMessage({ account, message: text });
  } catch (error) {
    throw explain(error);
  }
}

// One permit signature, then one transaction: createLeaseWithPermit. Returns the lease id.
export async function createLease({ spec, maxRatePerSecond, deposit, measurement }) {
  const block = await reader.getBlock();
  const deadline = block.timestamp + 3600n;
  const { v, r, s, yParity } = await signPermit(deposit, deadline);
  const receipt = await send(config.leaseMarket, leaseMarketAbi, "createLeaseWithPermit", [
    spec, maxRatePerSecond, deposit, measurement, deadline, Number(v ?? 27n + BigInt(yParity)), r, s,
  ]);
  const [created] = parseEventLogs({ abi: leaseMarketAbi, eventName: "LeaseCreated", logs: receipt.logs });
  return Number(created.args.leaseId);
}

export async function topUp(leaseId, amount) {
  await send(config.token, tokenAbi, "approve", [config.leaseMarket, amount]);
  await send(config.leaseMarket, leaseMarketAbi, "topUp", [BigInt(leaseId), amount]);
}

// Always closes at once; `held` is what the pending attestation's verdict still decides (or null).
export async function closeLease(leaseId) {
  const receipt = await send(config.leaseMarket, leaseMarketAbi, "closeLease", [BigInt(leaseId)]);
  const [closed] = parseEventLogs({ abi: leaseMarketAbi, eventName: "LeaseClosed", logs: receipt.logs });
  return { ...closed.args, held: await heldEscrow(leaseId) };
}

// Releases a held close after the verdict or the verifiers' window (anyone may); the renter's
// refund is credited, so the renter then withdraws it. Returns the LeaseHeldReleased args.
export async function finalizeClose(leaseId, withdraw) {
  const receipt = await send(config.leaseMarket, leaseMarketAbi, "finalizeClose", [BigInt(leaseId)]);
  const [released] = parseEventLogs({ abi: leaseMarketAbi, eventName: "LeaseHeldReleased", logs: receipt.logs });
  if (withdraw && (await credits(wallet.account)) > 0n) await send(config.leaseMarket, leaseMarketAbi, "withdraw", []);
  return released.args;
}

export async function claim(leaseId) {
  const receipt = await send(config.leaseMarket, leaseMarketAbi, "claim", [BigInt(leaseId)]);
  const [claimed] = parseEventLogs({ abi: leaseMarketAbi, eventName: "EarningsClaimed", logs: receipt.logs });
  return claimed.args.amount;
}

export async function stake(nodeKey, amount) {
  await send(config.token, tokenAbi, "approve", [config.nodeRegistry, amount]);
  await send(config.nodeRegistry, nodeRegistryAbi, "stake", [nodeKey, amount]);
}

export const requestUnstake = (nodeKey, amount) => send(config.nodeRegistry, nodeRegistryAbi, "requestUnstake", [nodeKey, amount]);
export const withdrawUnstaked = (nodeKey) => send(config.nodeRegistry, nodeRegistryAbi, "withdrawUnstaked", [nodeKey]);
export const withdrawCredits = () => send(config.leaseMarket, leaseMarketAbi, "withdraw", []);
export { wallet };
