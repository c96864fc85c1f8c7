// Attestation detail: what the chain and the verifier say, the AMD certificate chain, and a
// check of the report's signature in this browser (WebCrypto), saying what it covers.
import { getAttestation, getEvidence, getLease } from "../api.js";
import { isSimulated, parseCertificate, parseReport, pemCertificates, tcbParts, verifySignature } from "../attestation.js";
import { facts, h, message, simulatedBadge, when } from "../ui.js";

const CERT_NAMES = ["VCEK (signs the report)", "ASK (signs the VCEK)", "ARK (AMD root)"];

// Until when the verifiers' verdict can be disputed on chain, where the EVM re-checks the report.
function disputeWindow(attestation, now) {
  if (!attestation.disputeWindowEndsAt) return null;
  const open = attestation.disputeWindowEndsAt * 1000 > now.getTime() && !attestation.dispute;
  return h("span", { id: "dispute-window" }, open ? "open until " : "closed ", when(attestation.disputeWindowEndsAt),
    open && attestation.status !== "pending" ? " (anyone may dispute the verdict: cvm attestation dispute)" : "");
}

// A dispute of the verdict and what the EVM's check decided.
function disputeOutcome(dispute) {
  if (!dispute) return h("span", { id: "dispute-outcome" }, "none");
  const outcome = dispute.overturned
    ? h("span", { class: "badge bad" }, `REVERSED (the ${dispute.verdict ?? "verdict"} verdict was wrong)`)
    : h("span", { class: "badge ok" }, `upheld (the ${dispute.verdict ?? "verdict"} verdict stands)`);
  return h("span", { id: "dispute-outcome" }, outcome, " disputed by ", h("span", { class: "mono" }, dispute.disputer), " ", when(dispute.disputedAt));
}

export async function attestationPage(main, config, id) {
  const leaseId = Number(id);
  const [lease, attestation] = await Promise.all([getLease(leaseId), getAttestation(leaseId)]);
  const title = h("h1", { tabindex: "-1" }, `Attestation of lease ${leaseId}`);
  if (!attestation.reportHash) {
    main.replaceChildren(title, facts([["Status", attestation.status]]), h("p", {}, "No report submitted yet: this page fills in once the node attests."));
    return;
  }
  const evidence = await getEvidence(attestation.reportHash).catch(() => null);
  const report = evidence ? parseReport(evidence.report) : null;
  const certificates = evidence ? [evidence.vcek, ...pemCertificates(evidence.chainPem)].map((c) => parseCertificate(c)) : [];
  // The verifier's verdict on the root first; the certificates' names for a report not yet checked.
  const simulated = attestation.verification?.amdRoot === "simulated" || certificates.some(isSimulated);
  const matches = attestation.measurement?.toLowerCase() === lease.expectedMeasurement.toLowerCase();
  const v = attestation.verification;
  const now = new Date();
  const resultBox = h("div", { id: "browser-check", "aria-live": "polite" });

  async function checkInBrowser() {
    resultBox.replaceChildren(h("p", {}, "Checking…"));
    try {
      const signatureOk = await verifySignature(report, certificates[0]);
      const hashOk = report.hash.toLowerCase() === attestation.reportHash.toLowerCase();
      const measurementOk = report.measurement.toLowerCase() === lease.expectedMeasurement.toLowerCase();
      const ok = signatureOk && hashOk && measurementOk;
      resultBox.replaceChildren(message(ok ? "ok" : "error", ok ? "Checked in your browser: all three checks passed." : "Checked in your browser: a check FAILED."),
        h("ul", {},
          h("li", {}, `${signatureOk ? "✓" : "✗"} The report's ECDSA P-384 signature verifies against the VCEK's public key (WebCrypto, SHA-384 over the first 672 bytes).`),
          h("li", {}, `${hashOk ? "✓" : "✗"} keccak256 of the 1184-byte report equals the report hash recorded on chain.`),
          h("li", {}, `${measurementOk ? "✓" : "✗"} The report's measurement equals the lease's expected measurement.`)),
        h("p", {}, h("strong", {}, "Not checked here: "), "that the VCEK is signed by the ASK and the ASK by AMD's ARK (RSA-PSS), that the ARK is AMD's genuine root, the TCB and chip id against the VCEK's extensions, and the REPORT_DATA binding to this lease and nonce. The marketplace's verifiers check those; their reason codes are above."),
        simulated ? message("warn", "This report comes from the SIMULATED AMD-SP: a valid signature proves only that the local simulator signed it.") : null);
    } catch (error) {
      resultBox.replaceChildren(message("error", `The browser check could not run: ${error.message}`));
    }
  }

  main.replaceChildren(title,
    simulated || config.local ? message("warn", simulatedBadge("simulated-badge"), " This report was signed by the simulated AMD Secure Processor of a local stack, not by an AMD chip. It proves nothing outside tests and demos.") : "",
    facts([
      ["Status", h("span", { class: `badge ${attestation.status}`, id: "attestation-status" }, attestation.status)],
      ["Node", h("span", { class: "mono" }, attestation.node)],
      ["Measurement", h("span", { class: "mono" }, attestation.measurement)],
      ["Expected", h("span", { class: "mono" }, lease.expectedMeasurement)],
      ["Measurement matches", matches ? h("span", { class: "badge ok" }, "yes") : h("span", { class: "badge bad" }, "NO")],
      ["Report hash", h("span", { class: "mono" }, attestation.reportHash)],
      ["Submitted", when(attestation.submittedAt)],
      ["Verified", when(attestation.verifiedAt)],
      ["Re-attestation deadline", when(attestation.expiresAt)],
      ["Dispute window", disputeWindow(attestation, now)],
      ["Dispute", disputeOutcome(attestation.dispute)],
      report && ["Reported TCB", tcbParts(report.reportedTcb)],
      report && ["Chip id", h("span", { class: "mono" }, report.chipId)],
      report && ["Debug allowed", report.debugAllowed ? "yes" : "no"],
      report && ["VMPL", String(report.vmpl)],
      ["Verifier result", v ? `${v.ok ? "valid" : "invalid"}${v.detail?.product ? ` (${v.detail.product}, signed by ${v.detail.signer})` : ""}` : "not checked yet"],
      ["Signed by", v?.amdRoot === "simulated" ? simulatedBadge() : v?.amdRoot === "amd" ? "an AMD chip (AMD's root)" : "—"],
      ["Verifier reason codes", v ? (v.reasonCodes.length ? h("span", { id: "reason-codes" }, v.reasonCodes.join(", ")) : h("span", { id: "reason-codes" }, "none (every check passed)")) : "—"],
    ]),
    h("h2", {}, "AMD certificate chain"),
    certificates.length === 0 ? h("p", {}, "No evidence stored for this report.") :
      h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Certificate", "Subject", "Issuer", "Valid from", "Valid until", "Now"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, certificates.map((c, i) => h("tr", {}, h("td", {}, CERT_NAMES[i] || `certificate ${i}`), h("td", {}, c.subject, isSimulated(c) ? h("span", { class: "badge simulated" }, " simulated") : null), h("td", {}, c.issuer),
          h("td", {}, c.notBefore.toISOString()), h("td", {}, c.notAfter.toISOString()), h("td", {}, c.notBefore <= now && now <= c.notAfter ? "valid" : "NOT valid")))))),
    report ? h("div", { class: "card" }, h("h2", {}, "Verify in my browser"), h("p", {}, "Checks the report's signature with your browser's own cryptography, without trusting this server's verdict."),
      h("button", { type: "button", id: "verify-browser", onclick: checkInBrowser }, "Verify in my browser"), resultBox) : "");
}
