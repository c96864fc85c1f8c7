// What the lease page shows its renter only: the lease's image (from the private spec), the
// guest's service ports with their attested TLS fingerprint, and the guest console, followed
// while the page is open. The console comes from the node's host, which
// sees and can alter every byte: it is drawn as text (never HTML) with control characters made
// visible, and marked UNTRUSTED.
import { ApiError, getAttestation, getEvidence, getGuestAccess, getLeaseConsole, getLeaseSpec } from "./api.js";
import { attestedTlsFingerprint, parseReport } from "./attestation.js";
import { forgetSession, savedSession, signIn } from "./session.js";
import { ago, h, message, short } from "./ui.js";
import { state as wallet } from "./wallet.js";

export const FOLLOW_INTERVAL_MS = 3000;
// What the page keeps drawn: the backend keeps the last 256 KiB of a console.
const SHOWN_MAX_CHARS = 256 * 1024;
// As `cvm lease logs` (cvm/cli/guest.py): C0 and C1 controls except newline and tab, plus the
// bidirectional overrides and isolates, which could make shown text read differently.
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;
const UNTRUSTED = "UNTRUSTED: relayed by the node's host, which sees every byte and could change any. "
  + "Use it to debug a boot, never as proof of what runs (the attestation is that).";

export const printable = (text) => text.replace(/\r\n/g, "\n").replace(CONTROL, "?");

// `config`: the console's config; `leaseId`; `renter`/`status` as far as known (null if the
// lease is not indexed yet). Returns the two elements, `setLease` for what the page learns
// later (the chain's renter and status), and `stop` for when the page is left.
export function renterView(config, leaseId, { renter = null, status = null } = {}) {
  const imageLine = h("p", { id: "lease-image", "aria-live": "polite" });
  const notice = h("div", { id: "guest-console-notice" });
  const output = h("pre", { id: "guest-console-text", class: "guest-console", "aria-label": "Guest console output (untrusted)", tabindex: "0" });
  const line = h("p", { id: "guest-console-status", class: "pending", "aria-live": "polite" });
  const portsSection = h("section", { "aria-label": "Service ports", id: "guest-ports" });
  const section = h("section", { "aria-label": "Guest console", id: "guest-console" },
    h("h2", {}, "Guest console ", h("span", { class: "badge bad", id: "untrusted-badge" }, "UNTRUSTED")),
    h("p", { class: "msg warn", id: "guest-console-warning" }, UNTRUSTED), notice);
  const account = wallet.account;
  let token = null;
  let since = 0;
  let shown = "";
  let closed = status === "closed";
  let following = false;
  let stopped = false;
  let timer = null;
  let inFlight = null;
  let imageShown = false;
  let portsShown = false;

  const mine = () => Boolean(account && renter && account.toLowerCase() === renter.toLowerCase());

  function draw() {
    if (stopped || following) return;
    imageLine.replaceChildren();
    if (!renter) {
      notice.replaceChildren(h("p", {}, "Waiting for the marketplace to index this lease…"));
    } else if (!account) {
      notice.replaceChildren(message("warn", "Connect the renter's wallet to read this lease's guest console."));
    } else if (!mine()) {
      notice.replaceChildren(message("warn", `The guest console is for the lease's renter (${short(renter)}) only.`));
    } else if (!(token = savedSession(account))) {
      notice.replaceChildren(h("p", {}, "Reading the console needs a Sign-In with Ethereum (one message, no transaction)."),
        h("button", { type: "button", id: "console-sign-in", onclick: signInAndFollow }, "Sign in to read the guest console"));
    } else {
      follow();
    }
  }

  async function signInAndFollow(event) {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      token = await signIn(config);
    } catch (error) {
      button.disabled = false;
      notice.querySelector(".msg")?.remove();
      notice.append(message("error", error.message));
      return;
    }
    if (!stopped) follow();
  }

  function follow() {
    following = true;
    notice.replaceChildren(output, line);
    line.textContent = "Reading the console…";
    tick();
  }

  async function showImage() {
    if (imageShown) return;
    imageShown = true;
    try {
      const spec = await getLeaseSpec(token, leaseId);
      if (!stopped) imageLine.replaceChildren("Image: ", h("span", { class: "mono", id: "lease-image-id" }, spec.image));
    } catch (error) {
      const missing = error instanceof ApiError && error.status === 404;
      if (!missing) imageShown = false; // tried again after the next good console read
      else if (!stopped) imageLine.replaceChildren("Image: not known to the marketplace (no private spec stored for this lease).");
    }
  }

  // Each forwarded port: the address the node announced (untrusted) and the TLS key the
  // lease's report binds (the guest key's SPKI hash, its binding checked in this browser).
  async function showPorts() {
    if (portsShown) return;
    portsShown = true;
    try {
      const access = await getGuestAccess(token, leaseId);
      if (stopped) return;
      if (access.ports.length === 0) {
        portsSection.replaceChildren(h("h2", {}, "Service ports"), h("p", {}, "This guest's image declares no service ports (SSH only)."));
        return;
      }
      const attestation = await getAttestation(leaseId);
      const evidence = attestation.reportHash ? await getEvidence(attestation.reportHash).catch(() => null) : null;
      const fingerprint = evidence ? await attestedTlsFingerprint(evidence.guestKey, parseReport(evidence.report)) : null;
      if (stopped) return;
      const host = access.host.includes(":") ? `[${access.host}]` : access.host;
      portsSection.replaceChildren(h("h2", {}, "Service ports"),
        h("p", {}, "Reached over TLS with the key only the attested guest holds. Connect with ", h("code", {}, `cvm lease curl ${leaseId} PORT /PATH`),
          " (or the SDK's ", h("code", {}, "attested_client"), "), which refuses any server whose key is not the attested one."),
        fingerprint ? null : message("warn", "No verified report binds a TLS key yet: do not trust these ports until one does."),
        h("div", { class: "table-wrap" }, h("table", { id: "guest-ports-table" },
          h("thead", {}, h("tr", {}, ["Guest port", "Address", "Attested TLS key (SHA-256 of its SubjectPublicKeyInfo)"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, access.ports.map((p) => h("tr", { "data-port": String(p.guestPort) },
            h("td", {}, String(p.guestPort)),
            h("td", { class: "mono" }, `${host}:${p.hostPort}`),
            h("td", { class: "mono" }, fingerprint ? [h("span", { class: "pin" }, fingerprint.pin), h("br"), h("small", { class: "hex" }, fingerprint.hex)] : "—")))))));
    } catch (error) {
      portsShown = false; // tried again after the next good console read
      if (!stopped && error instanceof ApiError && error.status === 404) {
        portsSection.replaceChildren(h("h2", {}, "Service ports"), h("p", { class: "pending" }, "The node has not announced where the guest is reached yet."));
      }
    }
  }

  function show(view) {
    let added = "";
    // The backend keeps a tail: bytes before `start` were dropped (or skipped by the node).
    if (view.start > since) added += `… ${view.start - since} earlier bytes are no longer kept …\n`;
    added += printable(view.text);
    since = view.end;
    if (added) {
      const atEnd = output.scrollHeight - output.scrollTop - output.clientHeight < 8;
      shown = (shown + added).slice(-SHOWN_MAX_CHARS);
      output.textContent = shown; // text only: a host controls these bytes
      if (atEnd) output.scrollTop = output.scrollHeight;
    }
    const last = view.updatedAt ? `last output from the node ${ago(view.updatedAt)}` : "no console output from the node yet";
    line.textContent = closed ? `The lease is closed: this is all its node shipped (${last}).` : `Following: read every ${FOLLOW_INTERVAL_MS / 1000} s; ${last}.`;
  }

  // One clear line for each way a read fails; which failures are worth retrying.
  function failed(error) {
    const status = error instanceof ApiError ? error.status : -1;
    if (status === 401) {
      forgetSession(account);
      token = null;
      following = false;
      imageShown = false;
      draw();
      notice.prepend(message("error", "Your sign-in has expired or was refused: sign in again to read the console."));
      return false;
    }
    if (status === 403) {
      line.textContent = "The guest console is for the lease's renter only.";
      return false;
    }
    if (status === 404) {
      line.textContent = `The marketplace does not know lease ${leaseId} yet; trying again.`;
      return true;
    }
    line.textContent = status === 0 || status === -1
      ? "The marketplace backend does not answer; trying again."
      : `The console could not be read (${error.message}); trying again.`;
    return true;
  }

  async function tick() {
    timer = null;
    if (stopped) return;
    const last = closed; // a read that began after the close is the final one
    const controller = new AbortController();
    inFlight = controller;
    let again = true;
    try {
      show(await getLeaseConsole(token, leaseId, since, controller.signal));
      if (!imageShown) showImage(); // after a good read: the lease is indexed, so a 404 means no spec
      if (!portsShown) showPorts();
      if (last) again = false;
    } catch (error) {
      if (stopped) return;
      again = failed(error) && !last;
    } finally {
      if (inFlight === controller) inFlight = null;
    }
    if (again && !stopped && following) timer = setTimeout(tick, FOLLOW_INTERVAL_MS);
  }

  function setLease(update) {
    if (stopped) return;
    if (update.status === "closed" && !closed) {
      closed = true;
      // The next read (scheduled or in flight) ends the follow; do it now if one is waiting.
      if (timer !== null) { clearTimeout(timer); tick(); }
    }
    if (update.renter && !renter) {
      renter = update.renter;
      draw();
    }
  }

  function stop() {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    inFlight?.abort();
  }

  draw();
  return { imageLine, portsSection, section, setLease, stop };
}
