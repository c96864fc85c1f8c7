// Reads an SEV-SNP attestation report and its certificates in the browser, and checks the
// report's ECDSA P-384 signature against the VCEK with WebCrypto (AMD pub. 56860, table 22).
import { hexToBytes, keccak256, toHex } from "viem";

const SIGNED_BYTES = 0x2a0; // the signature covers everything before it
const u32 = (b, o) => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] * 2 ** 24);
const u64 = (b, o) => BigInt(u32(b, o)) + (BigInt(u32(b, o + 4)) << 32n);
const slice = (b, o, n) => toHex(b.slice(o, o + n));

export function parseReport(hex) {
  const b = hexToBytes(hex.startsWith("0x") ? hex : `0x${hex}`);
  if (b.length !== 1184) throw new Error(`a report is 1184 bytes, got ${b.length}`);
  return {
    bytes: b,
    version: u32(b, 0x00),
    guestSvn: u32(b, 0x04),
    policy: u64(b, 0x08),
    debugAllowed: (u64(b, 0x08) >> 19n) & 1n ? true : false,
    vmpl: u32(b, 0x30),
    signatureAlgo: u32(b, 0x34),
    currentTcb: u64(b, 0x38),
    reportData: slice(b, 0x50, 64),
    measurement: slice(b, 0x90, 48),
    reportedTcb: u64(b, 0x180),
    chipId: slice(b, 0x1a0, 64),
    committedTcb: u64(b, 0x1e0),
    launchTcb: u64(b, 0x1f0),
    hash: keccak256(b),
  };
}

// --- a minimal DER reader: enough of X.509 for names, validity and the public key ---------
function tlv(b, o) {
  const tag = b[o];
  let length = b[o + 1];
  let header = 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + b[o + 2 + i];
    header += n;
  }
  return { tag, start: o, body: o + header, end: o + header + length };
}

function children(b, node) {
  const out = [];
  for (let o = node.body; o < node.end; ) {
    const child = tlv(b, o);
    out.push(child);
    o = child.end;
  }
  return out;
}

const OID_NAMES = { "2.5.4.3": "CN", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST" };
function oid(b, node) {
  const bytes = b.slice(node.body, node.end);
  const parts = [Math.floor(bytes[0] / 40), bytes[0] % 40];
  let value = 0;
  for (const byte of bytes.slice(1)) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) { parts.push(value); value = 0; }
  }
  return parts.join(".");
}

function name(b, node) {
  return children(b, node).map((set) => {
    const [type, value] = children(b, children(b, set)[0]);
    return `${OID_NAMES[oid(b, type)] || oid(b, type)}=${new TextDecoder().decode(b.slice(value.body, value.end))}`;
  }).join(", ");
}

function time(b, node) {
  const text = new TextDecoder().decode(b.slice(node.body, node.end));
  const full = node.tag === 0x17 ? (Number(text.slice(0, 2)) < 50 ? "20" : "19") + text : text;
  return new Date(`${full.slice(0, 4)}-${full.slice(4, 6)}-${full.slice(6, 8)}T${full.slice(8, 10)}:${full.slice(10, 12)}:${full.slice(12, 14)}Z`);
}

export function parseCertificate(der) {
  const b = der instanceof Uint8Array ? der : hexToBytes(der.startsWith("0x") ? der : `0x${der}`);
  const [tbs] = children(b, tlv(b, 0));
  let fields = children(b, tbs);
  if (fields[0].tag === 0xa0) fields = fields.slice(1); // explicit version
  const [, , issuer, validity, subject, spki] = fields;
  const [notBefore, notAfter] = children(b, validity).map((t) => time(b, t));
  return { issuer: name(b, issuer), subject: name(b, subject), notBefore, notAfter, spki: b.slice(spki.start, spki.end) };
}

export function pemCertificates(pem) {
  return [...(pem || "").matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)].map((match) =>
    Uint8Array.from(atob(match[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0)));
}

export const isSimulated = (certificate) => /simulated/i.test(`${certificate.issuer} ${certificate.subject}`);

// The signature is R then S, each 72 bytes little-endian; WebCrypto wants 48-byte big-endian.
function rawSignature(report) {
  const field = (offset) => report.slice(offset, offset + 48).reverse();
  const signature = new Uint8Array(96);
  signature.set(field(SIGNED_BYTES), 0);
  signature.set(field(SIGNED_BYTES + 72), 48);
  return signature;
}

export async function verifySignature(report, vcek) {
  const key = await crypto.subtle.importKey("spki", vcek.spki, { name: "ECDSA", namedCurve: "P-384" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "ECDSA", hash: "SHA-384" }, key, rawSignature(report.bytes), report.bytes.slice(0, SIGNED_BYTES));
}

// TCB_VERSION (u64): boot loader, TEE, reserved, SNP firmware, microcode (Milan/Genoa layout).
export function tcbParts(tcb) {
  const byte = (i) => Number((tcb >> BigInt(8 * i)) & 0xffn);
  return `bootloader ${byte(0)}, TEE ${byte(1)}, SNP ${byte(6)}, microcode ${byte(7)} (0x${tcb.toString(16).padStart(16, "0")})`;
}

// The guest's attested TLS key: bytes 84-116 of its 116-byte guest key are the SHA-256 of the
// key's DER SubjectPublicKeyInfo. Returned only when SHA-256(guest key) is the report's
// REPORT_DATA[32:64] (checked here with WebCrypto), i.e. the report binds this key; null
// otherwise. `pin` is the `sha256/<base64>` form (curl --pinnedpubkey takes `sha256//<base64>`).
export const GUEST_KEY_SIZE = 116;
export async function attestedTlsFingerprint(guestKeyHex, report) {
  if (!guestKeyHex || !report) return null;
  const key = hexToBytes(guestKeyHex.startsWith("0x") ? guestKeyHex : `0x${guestKeyHex}`);
  if (key.length !== GUEST_KEY_SIZE) return null;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", key));
  if (toHex(digest).toLowerCase() !== `0x${report.reportData.slice(2 + 64)}`.toLowerCase()) return null;
  const spki = key.slice(84, 116);
  return { hex: toHex(spki).slice(2), pin: `sha256/${btoa(String.fromCharCode(...spki))}` };
}
