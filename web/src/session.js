// Sign-In with Ethereum sessions, kept per wallet for this browser tab (sessionStorage):
// the rent page signs in when it must; the lease page only reuses a session or asks on a click.
import { siweChallenge, siweLogin } from "./api.js";
import { signMessage } from "./chain.js";
import { status } from "./ui.js";
import { requireWallet } from "./wallet.js";

const keyOf = (account) => `cvm.session.${account.toLowerCase()}`;

// The saved, unexpired session token of `account`, or null: never asks the wallet.
export function savedSession(account) {
  if (!account) return null;
  let saved = null;
  try { saved = JSON.parse(sessionStorage.getItem(keyOf(account)) || "null"); } catch { saved = null; }
  return saved && new Date(saved.expiresAt) > new Date() ? saved.token : null;
}

// The backend refused the token (401): forget it, so the next sign-in asks again.
export const forgetSession = (account) => account && sessionStorage.removeItem(keyOf(account));

export async function signIn(config) {
  const { account } = requireWallet(config);
  const saved = savedSession(account);
  if (saved) return saved;
  status("Sign in with Ethereum: confirm the message in your wallet");
  try {
    const text = await siweChallenge(account);
    const session = await siweLogin(text, await signMessage(text));
    sessionStorage.setItem(keyOf(account), JSON.stringify(session));
    return session.token;
  } finally {
    status("");
  }
}
