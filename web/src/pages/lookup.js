// Public lease lookup for dApp developers: exactly what `isAttested` and `attestationOf`
// return, read from the chain through the RPC (not this backend), with code to do the same.
import { ATTESTATION_STATUS, attestationOnChain } from "../chain.js";
import { copyable, facts, h, message, when } from "../ui.js";

export async function lookupPage(main, config) {
  const leaseInput = h("input", { id: "lookup-lease", type: "number", min: "0", required: true, inputmode: "numeric" });
  const measurementInput = h("input", { id: "lookup-measurement", type: "text", class: "mono", value: config.demoMeasurement || "", required: true });
  const out = h("div", { id: "lookup-result", "aria-live": "polite" });

  async function look(event) {
    event.preventDefault();
    const leaseId = leaseInput.value.trim();
    const measurement = measurementInput.value.trim();
    if (!/^0x[0-9a-fA-F]{96}$/.test(measurement)) { out.replaceChildren(message("error", "The measurement must be 0x followed by 96 hex digits.")); return; }
    try {
      const { attestation: a, attested } = await attestationOnChain(leaseId, measurement);
      out.replaceChildren(
        h("h2", {}, `isAttested(${leaseId}, measurement)`), h("p", {}, h("strong", { id: "is-attested" }, String(attested))),
        h("h2", {}, `attestationOf(${leaseId})`),
        facts([
          ["status", `${a.status} (${ATTESTATION_STATUS[a.status]})`], ["node", h("span", { class: "mono" }, a.node)],
          ["reportHash", h("span", { class: "mono" }, a.reportHash)], ["measurement", h("span", { class: "mono" }, a.measurement)],
          ["reportedTcb", String(a.reportedTcb)], ["submittedAt", [String(a.submittedAt), " ", when(Number(a.submittedAt))]],
          ["verifiedAt", [String(a.verifiedAt), " ", when(Number(a.verifiedAt))]], ["expiresAt", [String(a.expiresAt), " ", when(Number(a.expiresAt))]],
        ]),
        h("p", {}, `Read from ${config.rpcUrl} (chain ${config.chainId}), AttestationRegistry ${config.attestationRegistry}.`),
        copyable("Solidity", `IAttestationRegistry registry = IAttestationRegistry(${config.attestationRegistry});
bytes memory expected = hex"${measurement.slice(2)}";
if (!registry.isAttested(${leaseId}, expected)) revert NotAttested(${leaseId});
IAttestationRegistry.Attestation memory a = registry.attestationOf(${leaseId});`),
        copyable("Python", `from cvm.sdk import AttestationClient

client = AttestationClient("${config.rpcUrl}", "${config.attestationRegistry}")
client.is_attested(${leaseId}, bytes.fromhex("${measurement.slice(2)}"))
client.status(${leaseId})`));
    } catch (error) {
      out.replaceChildren(message("error", `The chain refused the read: ${error.shortMessage || error.message}`));
    }
  }

  main.replaceChildren(h("h1", { tabindex: "-1" }, "Lease lookup"),
    h("p", {}, "What a smart contract sees: the calls go straight to the chain's RPC, not through the marketplace backend."),
    h("form", { class: "grid", "aria-label": "Look up a lease", onsubmit: look },
      h("label", { for: "lookup-lease" }, "Lease id", leaseInput),
      h("label", { for: "lookup-measurement" }, "Expected measurement", measurementInput),
      h("button", { type: "submit", id: "lookup" }, "Look up")), out);
}
