// Marketplace: every registered node, its capacity, price, stake and track record. Prices
// read as a renter pays them: tokens per hour for a VM of the chosen size (a lease pays the
// node's per-vCPU price times its vCPUs); the chain's base units sit behind a toggle.
import { listNodes } from "../api.js";
import { nodeOnChain } from "../chain.js";
import { SECONDS_PER_HOUR, TEE_TYPES, ago, baseRate, h, parsePerHour, perHour, tokens } from "../ui.js";

const COLUMNS = [
  ["address", "Node", (n) => n.address],
  ["tee", "TEE", (n) => n.teeType],
  ["vcpu", "vCPU free / total", (n) => n.freeVcpus ?? n.vcpus],
  ["memory", "Memory MiB free / total", (n) => n.freeMemoryMib ?? n.memoryMib],
  ["price", "Price per hour", (n) => n.pricePerVcpuSecond],
  ["stake", "Stake", (n) => n.stake],
  ["reputation", "Reputation", (n) => n.reputation],
  ["region", "Region", (n) => n.region],
  ["heartbeat", "Last heartbeat", (n) => (n.lastHeartbeatAt ? n.lastHeartbeatAt.getTime() : 0)],
];

export async function marketplacePage(main) {
  const nodes = await listNodes();
  const misses = new Map(await Promise.all(nodes.map(async (n) => {
    try { return [n.address, (await nodeOnChain(n.address)).missedAttestations]; } catch { return [n.address, null]; }
  })));
  const view = { sort: "price", descending: false };
  const filters = {
    tee: h("select", { id: "f-tee" }, h("option", { value: "" }, "any"), TEE_TYPES.slice(1).map((name, i) => h("option", { value: String(i + 1) }, name))),
    vcpu: h("input", { id: "f-vcpu", type: "number", min: "0", inputmode: "numeric", placeholder: "0" }),
    size: h("input", { id: "f-size", type: "number", min: "1", value: "2", inputmode: "numeric" }),
    price: h("input", { id: "f-price", type: "text", inputmode: "decimal", placeholder: "any" }),
    active: h("input", { id: "f-active", type: "checkbox", checked: true }),
    base: h("input", { id: "f-base", type: "checkbox" }),
  };
  const priceNote = h("p", { id: "price-note", "aria-live": "polite" });
  const body = h("tbody");
  const header = h("tr");
  const table = h("div", { class: "table-wrap" }, h("table", {}, h("caption", { class: "sr-only" }, "Registered nodes"), h("thead", {}, header), body));

  function draw() {
    const minVcpu = Number(filters.vcpu.value || 0);
    const size = BigInt(Math.max(1, Math.floor(Number(filters.size.value) || 1)));
    let maxRate = null;
    try { maxRate = filters.price.value.trim() ? parsePerHour(filters.price.value) : null; } catch { maxRate = null; }
    const rows = nodes.filter((n) => (!filters.tee.value || n.teeType === Number(filters.tee.value))
      && (n.freeVcpus ?? n.vcpus) >= minVcpu
      && (maxRate === null || n.pricePerVcpuSecond * size <= maxRate)
      && (!filters.active.checked || n.active));
    priceNote.textContent = `Prices are what a VM of ${size} vCPU costs per hour on each node (its price per vCPU times ${size}).`
      + (filters.base.checked ? " Base units are the chain's own: per vCPU and second." : "");
    const key = COLUMNS.find(([id]) => id === view.sort)[2];
    rows.sort((a, b) => { const x = key(a), y = key(b); const order = x < y ? -1 : x > y ? 1 : 0; return view.descending ? -order : order; });
    header.replaceChildren(...COLUMNS.map(([id, label]) => h("th", { scope: "col", "aria-sort": view.sort === id ? (view.descending ? "descending" : "ascending") : "none" },
      h("button", { type: "button", onclick: () => { view.descending = view.sort === id ? !view.descending : false; view.sort = id; draw(); } }, label, view.sort === id ? (view.descending ? " ▼" : " ▲") : ""))));
    body.replaceChildren(...rows.map((n) => h("tr", {},
      h("td", { class: "mono" }, n.address),
      h("td", {}, TEE_TYPES[n.teeType] || n.teeType),
      h("td", {}, `${n.freeVcpus ?? "?"} / ${n.vcpus}`),
      h("td", {}, `${n.freeMemoryMib ?? "?"} / ${n.memoryMib}`),
      h("td", { class: "price" }, perHour(n.pricePerVcpuSecond * size), h("br"), h("small", {}, `${tokens(n.pricePerVcpuSecond * SECONDS_PER_HOUR)} per vCPU-hour`),
        filters.base.checked ? [h("br"), h("small", { class: "mono base-units" }, baseRate(n.pricePerVcpuSecond, "vCPU-second"))] : null),
      h("td", {}, tokens(n.stake)),
      h("td", {}, `${n.reputation.toFixed(2)}`, h("br"), h("small", {}, `${misses.get(n.address) ?? "?"} missed re-attestations`)),
      h("td", {}, n.region || "—"),
      h("td", {}, ago(n.lastHeartbeatAt)))));
    if (rows.length === 0) body.append(h("tr", {}, h("td", { colspan: String(COLUMNS.length) }, "No node matches these filters.")));
  }
  for (const input of Object.values(filters)) input.addEventListener("input", draw);
  draw();
  main.replaceChildren(
    h("h1", { tabindex: "-1" }, "Marketplace"),
    h("p", {}, `${nodes.length} nodes registered.`), priceNote,
    h("form", { class: "grid", role: "search", "aria-label": "Filter nodes", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "f-tee" }, "TEE type", filters.tee),
      h("label", { for: "f-vcpu" }, "At least this many free vCPU", filters.vcpu),
      h("label", { for: "f-size" }, "Price a VM of this many vCPU", filters.size),
      h("label", { for: "f-price" }, "Price per hour for that VM at most (tokens)", filters.price),
      h("label", { for: "f-active" }, "Active nodes only", filters.active),
      h("label", { for: "f-base" }, "Show base units", filters.base)),
    table);
}
