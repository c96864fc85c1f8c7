// The browser wallet: EIP-6963 discovery (every injected wallet announces itself), falling
// back to `window.ethereum`; connection, chain checks and the errors a person can act on.
import { createStore } from "mipd";
import { createWalletClient, custom, numberToHex } from "viem";

export class WalletError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "rejected" | "wrong-network" | "no-wallet" | "funds" | "other"
  }
}

const store = createStore();
const listeners = new Set();
export const state = { provider: null, info: null, account: null, chainId: null, client: null };

export function discovered() {
  const found = store.getProviders().map((detail) => ({ info: detail.info, provider: detail.provider }));
  if (found.length === 0 && typeof window.ethereum !== "undefined") {
    found.push({ info: { name: "Browser wallet (window.ethereum)", uuid: "window.ethereum" }, provider: window.ethereum });
  }
  return found;
}

export const onWalletChange = (listener) => listeners.add(listener);
const notify = () => listeners.forEach((listener) => listener(state));
store.subscribe(notify);

// The error a wallet gave, in words a person can act on.
export function explain(error) {
  const code = error?.code ?? error?.cause?.code;
  const text = `${error?.shortMessage || error?.message || error}`;
  if (error instanceof WalletError) return error;
  if (code === 4001 || /user rejected|denied|rejected the request/i.test(text)) {
    return new WalletError("rejected", "You rejected the request in your wallet: nothing was signed or sent.");
  }
  if (/insufficient funds|exceeds balance|ERC20InsufficientBalance/i.test(text)) {
    return new WalletError("funds", "Insufficient funds: your wallet does not hold enough tokens or ether for gas.");
  }
  return new WalletError("other", text);
}

export async function connect(choice) {
  const { provider, info } = choice;
  let accounts;
  try {
    accounts = await provider.request({ method: "eth_requestAccounts" });
  } catch (error) {
    throw explain(error);
  }
  if (!accounts || accounts.length === 0) throw new WalletError("no-wallet", "The wallet shared no account.");
  Object.assign(state, { provider, info, account: accounts[0] });
  state.chainId = Number(await provider.request({ method: "eth_chainId" }));
  state.client = createWalletClient({ account: state.account, transport: custom(provider) });
  if (provider.on) {
    provider.on("accountsChanged", (list) => { state.account = list[0] || null; state.client = state.account && createWalletClient({ account: state.account, transport: custom(provider) }); notify(); });
    provider.on("chainChanged", (id) => { state.chainId = Number(id); notify(); });
  }
  notify();
  return state;
}

// Ask the wallet to switch to `config`'s chain, adding it first if the wallet does not know it.
export async function switchChain(config) {
  const chainId = numberToHex(config.chainId);
  try {
    await state.provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId }] });
  } catch (error) {
    if ((error?.code ?? error?.data?.originalError?.code) !== 4902) throw explain(error);
    try {
      await state.provider.request({
        method: "wallet_addEthereumChain",
        params: [{ chainId, chainName: `cvm chain ${config.chainId}`, rpcUrls: [config.rpcUrl], nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 } }],
      });
    } catch (added) {
      throw explain(added);
    }
  }
  state.chainId = Number(await state.provider.request({ method: "eth_chainId" }));
  notify();
}

export function requireWallet(config) {
  if (!state.account) throw new WalletError("no-wallet", "Connect a wallet first (the button at the top).");
  if (state.chainId !== config.chainId) {
    throw new WalletError("wrong-network", `Wrong network: your wallet is on chain ${state.chainId}, this marketplace runs on chain ${config.chainId}. Switch network first.`);
  }
  return state;
}
