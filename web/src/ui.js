// Small DOM and formatting helpers shared by the pages.
import { formatUnits, parseUnits } from "viem";

// h("p", { class: "x", onclick }, child, ...): an element; strings become text (never HTML).
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function message(kind, text, ...extra) {
  return h("div", { class: `msg ${kind}`, role: kind === "error" ? "alert" : "status" }, text, ...extra);
}

// The mark of a report signed by a local stack's simulated AMD-SP (the verifier's amd_root):
// shown wherever the page says "verified", so that a demo never reads like hardware.
export const simulatedBadge = (id) => h("span", { class: "badge simulated", id, title: "Signed by the simulated AMD Secure Processor of a local stack, not by an AMD chip" }, "SIMULATED AMD-SP");

export function status(text) {
  document.getElementById("status").textContent = text || "";
}

let tokenUnits = { decimals: 18, symbol: "tokens" };
export const setTokenUnits = (units) => (tokenUnits = units);
export const tokens = (amount) => (amount === null || amount === undefined ? "—" : `${trim(formatUnits(amount, tokenUnits.decimals))} ${tokenUnits.symbol}`);
export const parseTokens = (text) => parseUnits(String(text).trim(), tokenUnits.decimals);
export const tokenDecimals = () => tokenUnits.decimals;

function trim(text) {
  if (!text.includes(".")) return text;
  const [whole, fraction] = text.split(".");
  return fraction.length > 8 ? `${whole}.${fraction.slice(0, 8)}…` : text;
}

// Prices on chain are base units per second (a node's per vCPU, a lease's for the whole VM);
// renters think in tokens per hour for the size they rent. `perHour` is what the page shows,
// `baseRate` the chain's own figure, shown only behind a "base units" toggle.
export const SECONDS_PER_HOUR = 3600n;
export const perHour = (perSecond) => (perSecond === null || perSecond === undefined ? "—" : `${tokens(perSecond * SECONDS_PER_HOUR)} per hour`);
export const baseRate = (perSecond, unit = "second") => `${perSecond} base units per ${unit}`;
// Tokens per hour as typed → base units per second, rounded down: never more than was said.
export const parsePerHour = (text) => parseTokens(text) / SECONDS_PER_HOUR;

export const short = (address) => (address ? `${address.slice(0, 6)}…${address.slice(-4)}` : "—");

export function when(unixSeconds) {
  if (!unixSeconds) return null;
  const date = new Date(unixSeconds * 1000);
  return h("time", { datetime: date.toISOString() }, date.toLocaleString());
}

export function ago(date) {
  if (!date) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  return seconds < 90 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Number(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} days`;
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]));
}

export function copyable(label, text) {
  const button = h("button", { class: "secondary", type: "button", onclick: async () => {
    try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; } catch { button.textContent = "Select and copy"; }
  } }, `Copy ${label}`);
  return h("div", { class: "card" }, h("div", { class: "row" }, h("strong", {}, label), button), h("pre", { "aria-label": label }, text));
}

export const TEE_TYPES = ["none", "SEV-SNP", "TDX"];
