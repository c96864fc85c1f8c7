// Rent: a quote first (which nodes fit, what it costs per hour, how long it runs), then
// Sign-In with Ethereum and one wallet transaction (an EIP-2612 permit signature +
// createLeaseWithPermit). A session the backend refuses (401) is dropped at once, so the
// next click signs in afresh instead of sending the dead token again.
import { ApiError, createIntent, listNodes } from "../api.js";
import { balances, createLease } from "../chain.js";
import { forgetSession, signIn } from "../session.js";
import { baseRate, duration, facts, h, message, parsePerHour, parseTokens, perHour, status, tokens } from "../ui.js";
import { state as wallet } from "../wallet.js";

const SEV_SNP = 1;
const MIN_GAS_WEI = 10n ** 15n;

function field(id, label, attrs) {
  const input = h("input", { id, name: id, ...attrs });
  return [h("label", { for: id }, label, input), input];
}

export async function rentPage(main, config) {
  const [vcpuLabel, vcpu] = field("vcpu", "vCPU", { type: "number", min: "1", value: "2", required: true, inputmode: "numeric" });
  const [memoryLabel, memory] = field("memory", "Memory (MiB)", { type: "number", min: "1", value: "4096", required: true, inputmode: "numeric" });
  const [diskLabel, disk] = field("disk", "Disk (GiB)", { type: "number", min: "1", value: "20", required: true, inputmode: "numeric" });
  const [imageLabel, image] = field("image", "Image (name or hash)", { type: "text", value: "cvm-demo", required: true });
  const [measurementLabel, measurement] = field("measurement", "Expected launch measurement (48 bytes hex)", { type: "text", value: config.demoMeasurement || "", required: true, class: "mono", pattern: "^0x[0-9a-fA-F]{96}$" });
  const [sshLabel, ssh] = field("ssh", "SSH public key (optional)", { type: "text" });
  const [priceLabel, maxPrice] = field("max-price", "Max price for the whole VM, tokens per hour", { type: "text", value: "0.072", inputmode: "decimal", required: true });
  const mode = h("select", { id: "pay-mode" }, h("option", { value: "duration" }, "for a duration (minutes)"), h("option", { value: "deposit" }, "a deposit (tokens)"));
  const [amountLabel, amount] = field("pay-amount", "Minutes, or tokens", { type: "text", value: "60", inputmode: "decimal", required: true });
  const quoteBox = h("div", { id: "quote", "aria-live": "polite" });
  const resultBox = h("div", { id: "result", "aria-live": "assertive" });
  let quote = null;

  function request() {
    const max = parsePerHour(maxPrice.value);
    if (max <= 0n) throw new Error("The max price must be at least one base unit per second.");
    const seconds = mode.value === "duration" ? BigInt(Math.round(Number(amount.value) * 60)) : null;
    const deposit = seconds !== null ? max * seconds : parseTokens(amount.value);
    if (!/^0x[0-9a-fA-F]{96}$/.test(measurement.value.trim())) throw new Error("The expected measurement must be 0x followed by 96 hex digits (48 bytes).");
    if (deposit <= 0n) throw new Error("The deposit must be positive.");
    return { vcpu: Number(vcpu.value), memoryMib: Number(memory.value), diskGib: Number(disk.value), image: image.value.trim(), sshPublicKey: ssh.value.trim(), measurement: measurement.value.trim().toLowerCase(), maxRatePerSecond: max, deposit };
  }

  async function makeQuote() {
    resultBox.replaceChildren();
    quote = null;
    let wanted;
    try { wanted = request(); } catch (error) { quoteBox.replaceChildren(message("error", error.message)); return; }
    const nodes = await listNodes();
    const fit = nodes.filter((n) => n.active && n.teeType === SEV_SNP
      && (n.freeVcpus ?? n.vcpus) >= wanted.vcpu && (n.freeMemoryMib ?? n.memoryMib) >= wanted.memoryMib
      && (n.freeDiskGib ?? n.diskGib) >= wanted.diskGib && n.pricePerVcpuSecond * BigInt(wanted.vcpu) <= wanted.maxRatePerSecond)
      .sort((a, b) => (a.pricePerVcpuSecond < b.pricePerVcpuSecond ? -1 : 1));
    if (fit.length === 0) {
      quoteBox.replaceChildren(message("error", `No node fits: none offers ${wanted.vcpu} vCPU, ${wanted.memoryMib} MiB and ${wanted.diskGib} GiB free at ${perHour(wanted.maxRatePerSecond)} or less. Lower the size or raise the max price.`));
      return;
    }
    const rate = fit[0].pricePerVcpuSecond * BigInt(wanted.vcpu);
    const notes = [];
    if (wallet.account) {
      const { tokens: held, ether } = await balances(wallet.account);
      if (held < wanted.deposit) notes.push(message("error", `Insufficient funds: this wallet holds ${tokens(held)}, the deposit is ${tokens(wanted.deposit)}.`));
      else if (ether < MIN_GAS_WEI) notes.push(message("error", "Insufficient funds: this wallet has almost no ether to pay gas."));
    } else {
      notes.push(message("warn", "Connect a wallet to check your balance and rent."));
    }
    quote = { ...wanted, rate, nodes: fit.length, affordable: notes.every((n) => !n.classList.contains("error")) };
    quoteBox.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Quote"), facts([
      ["Nodes that fit", String(fit.length)],
      ["Cheapest rate", `${perHour(rate)} for this VM (${wanted.vcpu} vCPU × ${perHour(fit[0].pricePerVcpuSecond)})`],
      ["Your max price", perHour(wanted.maxRatePerSecond)],
      ["Deposit (escrowed)", tokens(wanted.deposit)],
      ["Runs for", `${duration(wanted.deposit / rate)} at the cheapest rate, at least ${duration(wanted.deposit / wanted.maxRatePerSecond)}`],
      ["Expected measurement", h("span", { class: "mono" }, wanted.measurement)],
      ["Image", wanted.image],
    ]),
    h("details", { id: "base-units" }, h("summary", {}, "Base units (what the chain stores)"), facts([
      ["Cheapest rate", baseRate(rate)],
      ["Node price", baseRate(fit[0].pricePerVcpuSecond, "vCPU-second")],
      ["Your max price", baseRate(wanted.maxRatePerSecond)],
      ["Deposit", `${wanted.deposit} base units`],
    ])), ...notes, h("p", {}, "Renting asks your wallet for: a sign-in message (once per session), a permit signature for the deposit, and one transaction."),
    h("button", { type: "button", id: "rent", disabled: !quote.affordable, onclick: rent }, "Sign in and rent")));
  }

  async function rent() {
    const button = document.getElementById("rent");
    button.disabled = true;
    resultBox.replaceChildren();
    try {
      const token = await signIn(config);
      status("Storing the private spec with the marketplace");
      const specHash = await createIntent(token, { image: quote.image, sshPublicKey: quote.sshPublicKey });
      status("Sign the deposit permit, then confirm the transaction in your wallet");
      const leaseId = await createLease({
        spec: { teeType: SEV_SNP, vcpu: quote.vcpu, memoryMiB: quote.memoryMib, diskGiB: quote.diskGib, minNodeStake: 0n, reattestInterval: 3600, specHash },
        maxRatePerSecond: quote.maxRatePerSecond, deposit: quote.deposit, measurement: quote.measurement,
      });
      status("");
      resultBox.replaceChildren(message("ok", `Lease ${leaseId} created. `, h("a", { href: `#/leases/${leaseId}` }, `Watch lease ${leaseId}`)));
      location.hash = `#/leases/${leaseId}`;
    } catch (error) {
      status("");
      if (error instanceof ApiError && error.status === 401) {
        // The backend refused the saved session (restarted, or it expired early): forget it,
        // or every later click would send the same dead token and fail the same way.
        forgetSession(wallet.account);
        resultBox.replaceChildren(message("error", "The marketplace no longer accepts your sign-in. No lease was created and no tokens moved. Sign in again to rent."));
      } else {
        const shown = error.kind === "rejected" ? `${error.message} No lease was created and no tokens moved.` : error.message;
        resultBox.replaceChildren(message("error", shown));
      }
      button.disabled = false;
    }
  }

  main.replaceChildren(
    h("h1", { tabindex: "-1" }, "Rent a confidential VM"),
    h("form", { class: "grid", "aria-label": "Lease request", onsubmit: (e) => { e.preventDefault(); makeQuote().catch((error) => quoteBox.replaceChildren(message("error", error.message))); } },
      vcpuLabel, memoryLabel, diskLabel, imageLabel, sshLabel, priceLabel,
      h("label", { for: "pay-mode" }, "Pay", mode), amountLabel, measurementLabel,
      h("button", { type: "submit", id: "get-quote" }, "Get a quote")),
    quoteBox, resultBox);
}
