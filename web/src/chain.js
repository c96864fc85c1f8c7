// The chain side of the console (viem): reads through the deployment's RPC directly, writes
// through the connected wallet. ABIs come from the compiled contracts (contracts/out).
import { createPublicClient, defineChain, http, parseEventLogs, parseSignature } from "viem";
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
  const [earned, refundable, claimable] = await Promise.all([
    market("earned", [BigInt(leaseId)]),
    status === "closed" ? 0n : market("refundable", [BigInt(leaseId)]),
    market("claimable", [BigInt(leaseId)]),
  ]);
  return { lease, status, earned, refundable, claimable, readAt: Date.now() };
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

export async function closeLease(leaseId) {
  const receipt = await send(config.leaseMarket, leaseMarketAbi, "closeLease", [BigInt(leaseId)]);
  const [closed] = parseEventLogs({ abi: leaseMarketAbi, eventName: "LeaseClosed", logs: receipt.logs });
  return closed.args;
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
