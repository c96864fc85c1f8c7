// The console's entry: loads the chain config, draws the wallet bar, routes #/paths to pages.
import { consoleConfig } from "./api.js";
import { tokenUnits, useChain } from "./chain.js";
import { h, message, setTokenUnits, short, status } from "./ui.js";
import { connect, discovered, onWalletChange, state, switchChain } from "./wallet.js";
import { marketplacePage } from "./pages/market.js";
import { rentPage } from "./pages/rent.js";
import { leasesPage, leasePage } from "./pages/leases.js";
import { attestationPage } from "./pages/attestation.js";
import { operatorPage } from "./pages/operator.js";
import { lookupPage } from "./pages/lookup.js";

const ROUTES = [
  [/^\/?$/, marketplacePage],
  [/^\/rent$/, rentPage],
  [/^\/leases$/, leasesPage],
  [/^\/leases\/(\d+)$/, leasePage],
  [/^\/leases\/(\d+)\/attestation$/, attestationPage],
  [/^\/operator$/, operatorPage],
  [/^\/lookup$/, lookupPage],
];

let config;
let cleanup = null;
let shownRoute = 0; // counts route changes: a page that finishes loading after the next began is stopped

function drawWallet() {
  const bar = document.getElementById("wallet");
  bar.replaceChildren();
  if (state.account) {
    bar.append(h("span", { "aria-label": `connected wallet ${state.account}`, class: "mono", id: "account" }, `${state.info?.name || "wallet"}: ${short(state.account)}`));
  } else {
    const wallets = discovered();
    if (wallets.length === 0) bar.append(h("span", {}, "No browser wallet found"));
    for (const choice of wallets) {
      bar.append(h("button", { type: "button", onclick: () => connect(choice).catch((error) => status(error.message)) }, `Connect ${choice.info.name}`));
    }
  }
  const network = document.getElementById("network");
  network.replaceChildren();
  if (state.account && state.chainId !== config.chainId) {
    network.append(message("warn", `Wrong network: your wallet is on chain ${state.chainId}; this marketplace runs on chain ${config.chainId}.`,
      h("button", { type: "button", onclick: () => switchChain(config).catch((error) => status(error.message)) }, `Switch to chain ${config.chainId}`)));
  }
}

async function route() {
  const current = ++shownRoute;
  if (cleanup) cleanup();
  cleanup = null;
  const path = location.hash.replace(/^#/, "") || "/";
  const main = document.getElementById("main");
  for (const link of document.querySelectorAll("nav a")) {
    const target = link.getAttribute("href").slice(1);
    if ((target === "/" ? path === "/" : path.startsWith(target))) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, page] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    main.replaceChildren(h("p", {}, "Loading…"));
    // Each page draws into a view of its own, shown only while its route is still current: a
    // slow page (the marketplace after a wallet change) finishing after the next route began
    // must not draw over it.
    const view = h("div", { class: "view" });
    try {
      const stop = (await page(view, config, ...match.slice(1))) || null;
      // Left while loading: stop its timers and streams now, nobody else will.
      if (current !== shownRoute) { if (stop) stop(); return; }
      main.replaceChildren(view);
      cleanup = stop;
    } catch (error) {
      if (current !== shownRoute) return;
      main.replaceChildren(h("h1", { tabindex: "-1" }, "Something went wrong"), message("error", error.message));
    }
    main.querySelector("h1")?.focus();
    return;
  }
  main.replaceChildren(h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the marketplace")));
}

async function start() {
  try {
    config = await consoleConfig();
  } catch (error) {
    document.getElementById("main").replaceChildren(message("error", `The console cannot load its configuration: ${error.message}`));
    return;
  }
  useChain(config);
  try {
    setTokenUnits(await tokenUnits());
  } catch (error) {
    status(`The chain at ${config.rpcUrl} does not answer: ${error.shortMessage || error.message}`);
  }
  onWalletChange(() => { drawWallet(); if (!location.hash.startsWith("#/lookup")) route(); });
  window.addEventListener("hashchange", route);
  drawWallet();
  await route();
  document.body.dataset.ready = "true";
}

start();
