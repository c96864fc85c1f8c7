// My leases: the connected wallet's leases; one lease's live timeline (pushed by the server),
// its money (read from the chain), top-up and close with the refund shown before signing, and
// for its renter the image, the guest's service ports with their attested TLS fingerprint and
// the (untrusted) guest console.
import { getLease, leasesOf, watchTimeline } from "../api.js";
import { CLOSE_REASON, closeLease, finalizeClose, leaseMoney, topUp } from "../chain.js";
import { renterView } from "../guest.js";
import { baseRate, duration, facts, h, message, parseTokens, perHour, simulatedBadge, status, tokens, when } from "../ui.js";
import { state as wallet } from "../wallet.js";

const STEP_LABELS = { created: "Created", matched: "Matched", accepted: "Accepted", launched: "Launched", report_submitted: "Report submitted", verified: "Verified" };

export async function leasesPage(main) {
  const title = h("h1", { tabindex: "-1" }, "My leases");
  if (!wallet.account) {
    main.replaceChildren(title, message("warn", "Connect a wallet to see its leases."));
    return;
  }
  const leases = await leasesOf({ renter: wallet.account });
  main.replaceChildren(title, leases.length === 0 ? h("p", {}, "No lease yet. ", h("a", { href: "#/rent" }, "Rent one")) :
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Lease", "Status", "Size", "Deposit", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, leases.reverse().map((l) => h("tr", {},
        h("td", {}, h("a", { href: `#/leases/${l.id}` }, `Lease ${l.id}`)), h("td", {}, l.status, l.amdRoot === "simulated" ? [" ", simulatedBadge()] : null),
        h("td", {}, `${l.vcpus} vCPU, ${l.memoryMib} MiB, ${l.diskGib} GiB`), h("td", {}, tokens(l.deposit)),
        h("td", {}, h("a", { href: `#/leases/${l.id}/attestation` }, "Attestation"))))))));
}

// What becomes of a held escrow, and when.
function heldFate(held) {
  if (held.releasable) return "(no verdict in time, or it just came: anyone may release it now)";
  return `(paid to the node only if the verifiers verify the pending attestation, otherwise refunded to you; decided by ${new Date(Number(held.releasableAt) * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC)`;
}

function timelineView(timeline) {
  if (!timeline) return h("p", {}, "Waiting for the marketplace to index this lease…");
  const failed = timeline.rejectedAt ? h("li", { class: "failed" }, h("span", { class: "step" }, "Rejected"), when(timeline.rejectedAt)) : null;
  const closed = timeline.closedAt ? h("li", { class: "done" }, h("span", { class: "step" }, "Closed"), when(timeline.closedAt), h("br"), h("small", {}, CLOSE_REASON[timeline.closeReason] || "")) : null;
  return h("ol", { class: "timeline", "aria-label": "Lease timeline" }, timeline.steps.map((step) => h("li", { class: step.at ? "done" : "", "data-step": step.name, "aria-label": `${STEP_LABELS[step.name]}: ${step.at ? "done" : "pending"}` },
    h("span", { class: "step" }, step.at ? "✓ " : "", STEP_LABELS[step.name] || step.name), step.at ? when(step.at) : h("span", { class: "pending" }, "pending"),
    step.at && step.detail?.amd_root === "simulated" ? [" ", simulatedBadge()] : null)), failed, closed);
}

const END_REASONS = {
  first_attestation_missed: "failed over: its first attestation never came",
  attestation_expired: "failed over: its attestation expired (silent node, challenge unanswered)",
  node_exit: "failed over: the node left",
  attestation_rejected: "failed over: the verifiers rejected its attestation",
  verdict_overturned: "failed over: a dispute found its verified attestation false",
  declined: "declined by the node",
  closed: "lease closed",
  replaced: "replaced",
};

// Where the lease ran: each node with when it took the lease and why it left (failover).
function historyView(nodes) {
  if (!nodes || nodes.length === 0) return null;
  return h("section", { "aria-label": "Nodes", id: "node-history" }, h("h2", {}, "Nodes"),
    h("ol", { class: "timeline" }, nodes.map((n) => h("li", { class: n.endedAt ? "done" : "", "data-node": n.node },
      h("span", { class: "mono" }, n.node), " from ", when(n.acceptedAt),
      n.endedAt ? [" until ", when(n.endedAt), h("br"), h("small", { class: "reason" }, END_REASONS[n.reason] || n.reason || "")] : [" ", h("small", {}, "(serving it now)")]))));
}

export async function leasePage(main, config, id) {
  const leaseId = Number(id);
  const timelineBox = h("section", { "aria-label": "Timeline", id: "timeline" }, h("p", {}, "Connecting to the live timeline…"));
  const moneyBox = h("section", { "aria-label": "Money", id: "money" });
  const actionBox = h("section", { "aria-label": "Actions", id: "actions" });
  const resultBox = h("div", { id: "lease-result", "aria-live": "assertive" });
  const lease = await getLease(leaseId).catch(() => null);
  // The lease's verdict so far, then whatever the live timeline's "verified" step says.
  const rootBox = h("p", { id: "amd-root", "aria-live": "polite" });
  function drawRoot(amdRoot) {
    rootBox.replaceChildren(...(amdRoot === "simulated" ? [simulatedBadge("simulated-badge"), " Its report was signed by the simulated AMD Secure Processor of a local stack, not by an AMD chip: it proves nothing about hardware."]
      : amdRoot === "amd" ? ["Report signed by an AMD chip (chains to AMD's root)."] : []));
  }
  drawRoot(lease?.amdRoot);
  const guest = renterView(config, leaseId, { renter: lease?.renter, status: lease?.status });
  let money = null;
  let timer = null;
  let drawnFor = null;

  async function refresh() {
    money = await leaseMoney(leaseId);
    guest.setLease({ renter: money.lease.renter, status: money.status });
    drawMoney();
  }

  function drawMoney() {
    if (!money) return;
    const { lease: l, status: s, earned, refundable } = money;
    const rate = l.ratePerSecond;
    const elapsed = BigInt(Math.floor((Date.now() - money.readAt) / 1000));
    // Between chain reads the page extrapolates at the lease's rate (it only accrues while active).
    const live = s === "active" && rate > 0n ? (refundable - rate * elapsed > 0n ? rate * elapsed : refundable) : 0n;
    moneyBox.replaceChildren(h("h2", {}, "Money"), facts([
      ["Status", s],
      ["Deposit", tokens(l.deposit)],
      ["Earned by the node so far", h("span", { id: "earned" }, tokens(earned + live))],
      ["Deposit left (refundable)", h("span", { id: "refundable" }, tokens(refundable - live))],
      ["Rate", rate > 0n ? h("span", { title: baseRate(rate) }, perHour(rate)) : "not accepted yet"],
      ["Time left", s === "active" && rate > 0n ? duration((refundable - live) / rate) : "—"],
      s === "closed" && ["Closed because", CLOSE_REASON[l.closeReason]],
      money.held && ["Held for the attestation's verdict", h("span", { id: "held" }, tokens(money.held.amount), " ", heldFate(money.held))],
    ]));
    // Redrawn only when who may act changes: a redraw would wipe what the person is typing.
    const actors = `${s} ${wallet.account} ${money.held ? money.held.releasable : "-"}`;
    if (actors !== drawnFor) { drawnFor = actors; drawActions(); }
  }

  function drawActions() {
    if (money?.held?.releasable && wallet.account) {
      // No verdict in time (or it just came): anyone may release it; the renter's refund is withdrawn too.
      const isRenter = wallet.account.toLowerCase() === money.lease.renter.toLowerCase();
      actionBox.replaceChildren(h("h2", {}, "Held escrow"), h("div", { class: "row" }, h("button", { type: "button", id: "finalize", onclick: () => act(async () => {
        const released = await finalizeClose(leaseId, isRenter);
        return `Released the held escrow (${CLOSE_REASON[released.reason]}): ${tokens(released.refund)} refunded to the renter${isRenter ? " and withdrawn to your wallet" : ""}.`;
      }) }, "Release the held escrow")));
      return;
    }
    if (!money || money.status === "closed" || !wallet.account || wallet.account.toLowerCase() !== money.lease.renter.toLowerCase()) {
      actionBox.replaceChildren();
      return;
    }
    const amount = h("input", { id: "topup-amount", type: "text", inputmode: "decimal", value: "0.01" });
    actionBox.replaceChildren(h("h2", {}, "Top up or close"),
      h("form", { class: "row", "aria-label": "Top up", onsubmit: async (e) => {
        e.preventDefault();
        await act(async () => { const value = parseTokens(amount.value); await topUp(leaseId, value); return `Topped up ${tokens(value)}.`; });
      } }, h("label", { for: "topup-amount" }, "Top-up amount (tokens)", amount), h("button", { type: "submit", id: "topup" }, "Top up (approve + top-up)")),
      h("div", { class: "row" }, h("button", { type: "button", class: "secondary", id: "close", onclick: confirmClose }, "Close lease…")));
  }

  async function confirmClose() {
    await refresh();
    const held = money.wouldHold;
    const box = h("div", { class: "card", id: "close-confirm" }, h("p", {}, `Closing now refunds about `, h("strong", { id: "refund-preview" }, tokens(money.refundable - held)),
      ` (everything not yet earned); the node keeps ${tokens(money.earned)} earned so far.`),
    held > 0n ? h("p", { id: "hold-preview" }, `The latest attestation still awaits the verifiers: about `, h("strong", {}, tokens(held)),
      ` for its time stays held in escrow, paid to the node only if they verify it, otherwise refunded to you.`) : null,
    h("div", { class: "row" }, h("button", { type: "button", id: "close-confirm-button", onclick: () => act(async () => {
      const closed = await closeLease(leaseId);
      const kept = closed.held ? ` ${tokens(closed.held.amount)} is held until the verifiers decide the pending attestation: paid to the node only if they verify it, otherwise refunded to you.` : "";
      return `Lease closed. Refunded ${tokens(closed.refund)}${closed.compensation ? ` plus ${tokens(closed.compensation)} compensation` : ""}.${kept}`;
    }) }, "Close and get the refund"), h("button", { type: "button", class: "secondary", onclick: () => box.remove() }, "Keep it running")));
    actionBox.append(box);
    box.querySelector("button").focus();
  }

  async function act(work) {
    resultBox.replaceChildren();
    for (const button of actionBox.querySelectorAll("button")) button.disabled = true;
    try {
      status("Confirm in your wallet");
      const done = await work();
      resultBox.replaceChildren(message("ok", done));
    } catch (error) {
      resultBox.replaceChildren(message("error", error.message));
    } finally {
      status("");
      for (const button of actionBox.querySelectorAll("button")) button.disabled = false;
      await refresh();
    }
  }

  main.replaceChildren(h("h1", { tabindex: "-1" }, `Lease ${leaseId}`),
    lease ? h("p", {}, `${lease.vcpus} vCPU, ${lease.memoryMib} MiB, ${lease.diskGib} GiB; expected measurement `, h("span", { class: "mono" }, lease.expectedMeasurement)) : "",
    guest.imageLine, rootBox,
    h("p", {}, h("a", { href: `#/leases/${leaseId}/attestation` }, "Attestation detail")),
    timelineBox, historyView(lease?.nodes) || "", moneyBox, actionBox, resultBox, guest.portsSection, guest.section);
  await refresh().catch((error) => moneyBox.replaceChildren(message("error", `Cannot read lease ${leaseId} from the chain: ${error.shortMessage || error.message}`)));
  const stop = watchTimeline(leaseId, (timeline) => {
    timelineBox.replaceChildren(h("h2", {}, "Timeline (live)"), timelineView(timeline));
    const verified = timeline?.steps.find((step) => step.name === "verified" && step.at);
    if (verified?.detail?.amd_root) drawRoot(verified.detail.amd_root);
    refresh().catch(() => {});
  }, () => status("The live timeline lost its connection; the browser reconnects by itself"));
  timer = setInterval(drawMoney, 5000);
  return () => { stop(); clearInterval(timer); guest.stop(); };
}
