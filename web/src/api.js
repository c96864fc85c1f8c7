// The one module that reads the backend's JSON: every wire field name lives here, so a
// rename in the API is a one-place fix. The rest of the console sees these shapes only.

const V1 = "/v1";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(path, { method = "GET", body, token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(V1 + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (error) {
    throw new ApiError(0, `the marketplace backend does not answer (${error.message})`);
  }
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, (json && json.detail) || `HTTP ${response.status}`);
  return json;
}

const big = (value) => (value === null || value === undefined ? null : BigInt(value));

export async function consoleConfig() {
  const c = await call("/console/config");
  return {
    chainId: c.chain_id,
    rpcUrl: c.rpc_url,
    nodeRegistry: c.node_registry,
    leaseMarket: c.lease_market,
    attestationRegistry: c.attestation_registry,
    token: c.token,
    demoMeasurement: c.demo_measurement,
    local: c.local,
  };
}

function node(n) {
  return {
    address: n.address,
    operator: n.operator,
    teeType: n.tee_type,
    vcpus: n.vcpus,
    memoryMib: n.memory_mib,
    diskGib: n.disk_gib,
    region: n.region,
    pricePerVcpuSecond: big(n.price_per_vcpu_second),
    stake: big(n.stake),
    active: n.active,
    freeVcpus: n.free_vcpus,
    freeMemoryMib: n.free_memory_mib,
    freeDiskGib: n.free_disk_gib,
    runningLeases: n.running_leases,
    lastHeartbeatAt: n.last_heartbeat_at ? new Date(n.last_heartbeat_at) : null,
    reputation: n.reputation,
  };
}

export const listNodes = async () => (await call("/nodes?limit=1000")).map(node);

function lease(l) {
  return {
    id: l.id,
    renter: l.renter,
    node: l.node,
    status: l.status,
    vcpus: l.vcpus,
    memoryMib: l.memory_mib,
    diskGib: l.disk_gib,
    maxRatePerSecond: big(l.max_rate_per_second),
    ratePerSecond: big(l.rate_per_second),
    deposit: big(l.deposit),
    expectedMeasurement: l.expected_measurement,
    reattestInterval: l.reattest_interval,
    // "amd", "simulated" (the local stack's simulated AMD-SP signed its report) or null.
    amdRoot: l.amd_root ?? null,
    // The nodes that served it, oldest first (several once it failed over to another node).
    nodes: (l.nodes || []).map((n) => ({ node: n.node, acceptedAt: n.accepted_at, endedAt: n.ended_at ?? null, reason: n.reason ?? null })),
  };
}

export const leasesOf = async ({ renter, node: nodeKey }) => {
  const query = new URLSearchParams({ limit: "1000" });
  if (renter) query.set("renter", renter);
  if (nodeKey) query.set("node", nodeKey);
  return (await call(`/leases?${query}`)).map(lease);
};

export const getLease = async (id) => lease(await call(`/leases/${id}`));

export async function getAttestation(leaseId) {
  const a = await call(`/leases/${leaseId}/attestation`);
  const v = a.verification;
  return {
    status: a.status,
    node: a.node,
    reportHash: a.report_hash,
    measurement: a.measurement,
    submittedAt: a.submitted_at,
    verifiedAt: a.verified_at,
    expiresAt: a.expires_at,
    verification: v && { ok: v.ok, reasonCodes: v.reason_codes, detail: v.detail, checkedAt: v.checked_at, confirmTx: v.confirm_tx, amdRoot: v.amd_root ?? null },
    decidedAt: a.decided_at ?? null,
    // Until when anyone may dispute the verdict on chain (null: unknown, or no disputes here).
    disputeWindowEndsAt: a.dispute_window_ends_at ?? null,
    dispute: a.dispute ? { disputer: a.dispute.disputer, verdict: a.dispute.verdict, overturned: a.dispute.overturned, disputedAt: a.dispute.disputed_at, txHash: a.dispute.tx_hash } : null,
  };
}

// The canonical evidence bundle (report, VCEK, chain) stored under a report hash.
export async function getEvidence(reportHash) {
  const response = await fetch(`${V1}/evidence/${reportHash}`);
  if (!response.ok) throw new ApiError(response.status, `no evidence stored for ${reportHash}`);
  const e = JSON.parse(await response.text());
  return { report: e.report, vcek: e.vcek, chainPem: e.chain, chainId: e.chain_id, registry: e.registry, leaseId: e.lease_id, nonce: e.nonce, guestKey: e.guest_key };
}

export const siweChallenge = async (address) => (await call("/auth/nonce", { method: "POST", body: { address } })).message;

export async function siweLogin(message, signature) {
  const s = await call("/auth/login", { method: "POST", body: { message, signature } });
  return { token: s.token, address: s.address, expiresAt: new Date(s.expires_at) };
}

export async function createIntent(token, { image, sshPublicKey }) {
  const body = { image };
  if (sshPublicKey) body.ssh_public_key = sshPublicKey;
  return (await call("/leases/intents", { method: "POST", body, token })).spec_hash;
}

// The private spec (image, SSH key, cloud-init) of a lease: its renter's session only.
export async function getLeaseSpec(token, leaseId) {
  const s = await call(`/leases/${leaseId}/spec`, { token });
  return { specHash: s.spec_hash, image: s.image };
}

// The tail of a lease's guest console from stream position `since` (renter's session only).
// UNTRUSTED: the node's host relayed every byte; `text` covers stream bytes [start, end).
export async function getLeaseConsole(token, leaseId, since, signal) {
  const c = await call(`/leases/${leaseId}/logs?since=${since}`, { token, signal });
  return { leaseId: c.lease_id, node: c.node, start: c.start, end: c.end, text: c.text, updatedAt: c.updated_at ? new Date(c.updated_at) : null };
}

// Where the lease's guest is reached: its SSH port and each service port (guest port -> the
// node's host port), as its node announced it (renter's session only). Untrusted addresses:
// a client trusts a port only once its TLS key matches the attested fingerprint.
export async function getGuestAccess(token, leaseId, signal) {
  const a = await call(`/leases/${leaseId}/access`, { token, signal });
  return { host: a.host, sshPort: a.ssh_port, ports: (a.ports || []).map((p) => ({ guestPort: p.guest_port, hostPort: p.host_port })), updatedAt: new Date(a.updated_at) };
}

function timeline(t) {
  if (t === null) return null;
  return {
    leaseId: t.lease_id,
    status: t.status,
    steps: t.steps.map((s) => ({ name: s.name, at: s.at, detail: s.detail })),
    rejectedAt: t.rejected_at,
    closedAt: t.closed_at,
    closeReason: t.close_reason,
  };
}

// The lease's timeline pushed by the server (Server-Sent Events); returns a function to stop.
export function watchTimeline(leaseId, onTimeline, onError) {
  const source = new EventSource(`${V1}/leases/${leaseId}/timeline/stream`);
  source.addEventListener("timeline", (event) => onTimeline(timeline(JSON.parse(event.data))));
  source.onerror = () => onError && onError();
  return () => source.close();
}
